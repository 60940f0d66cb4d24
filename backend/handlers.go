package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The one way into and out of a handler: HandleRequest checks every
// field's type before the SDK converts it, each handler then checks unknown
// fields and names (unknownFields, validateVaultName; forRole for creds/
// and kubeconfig/), and respond turns whatever error it returns into the
// status that says whether retrying helps.

// HandleRequest checks the type of every field before the framework
// converts it: the framework's conversion error quotes the value, so a
// service_account_jwt (or a proxy_url with its password) sent as a JSON list
// or object would come back in the 400, and with it into Vault's audit log.
// No value is quoted here, whatever its type.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if resp := b.refuseMistypedFields(req); resp != nil {
		return resp, nil
	}
	return b.Backend.HandleRequest(ctx, req)
}

func (b *backend) refuseMistypedFields(req *logical.Request) *logical.Response {
	switch req.Operation {
	case logical.RevokeOperation, logical.RenewOperation, logical.RollbackOperation, logical.RotationOperation:
		return nil
	}
	if len(req.Data) == 0 {
		return nil
	}
	path := b.Route(req.Path)
	if path == nil {
		return nil
	}
	fd := &framework.FieldData{Raw: req.Data, Schema: path.Fields}
	fields := make([]string, 0, len(req.Data))
	for field := range req.Data {
		if _, ok := path.Fields[field]; ok {
			fields = append(fields, field)
		}
	}
	sort.Strings(fields)
	for _, field := range fields {
		if _, _, err := fd.GetOkErr(field); err != nil {
			if detail, ok := safeDetail(req.Data[field], err); ok {
				return logical.ErrorResponse("field %q: %s", field, detail)
			}
			return logical.ErrorResponse("field %q must be %s; the value sent (not shown) is not", field, describeFieldType(path.Fields[field].Type))
		}
	}
	return nil
}

// safeDetail returns the SDK's explanation when it cannot carry the value:
// the value is a scalar whose text the explanation does not contain (a
// negative duration, say). A list or map is never explained: its parts
// could be quoted one by one.
func safeDetail(value interface{}, err error) (string, bool) {
	switch value.(type) {
	case string, bool, int, int64, float64, json.Number:
	default:
		return "", false
	}
	// The SDK quotes values between single quotes: keep what comes before.
	detail, _, _ := strings.Cut(err.Error(), "'")
	detail = strings.TrimSpace(detail)
	text := fmt.Sprint(value)
	if text == "" || strings.Contains(detail, text) || len(detail) > 200 {
		return "", false
	}
	return detail, true
}

// describeFieldType says in words what a field of type t accepts.
func describeFieldType(t framework.FieldType) string {
	switch t {
	case framework.TypeString, framework.TypeLowerCaseString, framework.TypeNameString:
		return "a string"
	case framework.TypeBool:
		return "a boolean"
	case framework.TypeInt, framework.TypeInt64:
		return "an integer"
	case framework.TypeFloat:
		return "a number"
	case framework.TypeDurationSecond, framework.TypeSignedDurationSecond:
		return "a duration (seconds, or a string such as 15m)"
	case framework.TypeCommaStringSlice, framework.TypeStringSlice, framework.TypeSlice:
		return "a list of strings, or one comma-separated string"
	case framework.TypeKVPairs:
		return "a map of strings, or a list of key=value strings"
	case framework.TypeMap:
		return "a map"
	}
	return "of type " + t.String()
}

var plainFieldName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// maxListedUnknownFields bounds the error for a request with many unknown
// fields; the first few are enough to spot the typo.
const maxListedUnknownFields = 5

// unknownFields names request parameters the path does not define. The
// framework only warns about them; a typo in a security setting must fail.
func unknownFields(d *framework.FieldData) error {
	var unknown []string
	for k := range d.Raw {
		if _, ok := d.Schema[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	listed := make([]string, 0, maxListedUnknownFields+1)
	for i, k := range unknown {
		if i == maxListedUnknownFields {
			listed = append(listed, fmt.Sprintf("and %d more", len(unknown)-i))
			break
		}
		if plainFieldName.MatchString(k) {
			listed = append(listed, k) // reads best unquoted
		} else {
			listed = append(listed, fmt.Sprintf("%q", clip(k)))
		}
	}
	return fmt.Errorf("unknown field(s) %s; valid fields are %s", strings.Join(listed, ", "), strings.Join(sortedKeys(d.Schema), ", "))
}

// vaultNamePattern is what clusters/ and roles/ names may look like: a single
// Vault path segment that is also safe in Kubernetes annotation values.
var vaultNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$`)

const maxVaultNameLength = 128

// namePathPattern matches one path segment; the handler validates it so that
// a bad name gets a 400 explaining the rule instead of a 404.
const namePathPattern = `(?P<name>[^/]+)`

func validateVaultName(kind, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s name is required", kind)
	case len(name) > maxVaultNameLength:
		return fmt.Errorf("%s name is %d characters long; at most %d are allowed", kind, len(name), maxVaultNameLength)
	case strings.Contains(name, ".."), !vaultNamePattern.MatchString(name):
		return fmt.Errorf("%s name %q is invalid: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit, without '..'", kind, clip(name))
	}
	return nil
}

// roleHandler is a path callback for one role (creds/, kubeconfig/).
type roleHandler func(ctx context.Context, req *logical.Request, d *framework.FieldData, name string, role *roleEntry) (*logical.Response, error)

// forRole checks the request's fields and the role's name, loads the role
// (from the cache: these are the hot paths) and answers through respond.
func (b *backend) forRole(f roleHandler) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		if err := unknownFields(d); err != nil {
			return logical.ErrorResponse(err.Error()), nil
		}
		name := d.Get("name").(string)
		if err := validateVaultName("role", name); err != nil {
			return logical.ErrorResponse(err.Error()), nil
		}
		role, err := b.roles.get(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if role == nil {
			return logical.ErrorResponse("role %q does not exist", name), nil
		}
		resp, err := f(ctx, req, d, name, role)
		return respond(role.Cluster, resp, err)
	}
}

// respond is the one place that turns a handler's error into what Vault
// returns: a 400 error response for what the caller or operator must fix,
// a coded error (502/503/504) for the API server, and a plain error (500)
// for the plugin's own failures.
func respond(cluster string, resp *logical.Response, err error) (*logical.Response, error) {
	if err == nil {
		return resp, nil
	}
	var (
		user     userError
		notFound errClusterNotFound
		kube     *kubeError
		upstream *upstreamError
	)
	switch {
	case errors.As(err, &user), errors.As(err, &notFound):
		return logical.ErrorResponse(err.Error()), nil
	case errors.As(err, &kube) && namespaceTerminating(kube.err):
		return logical.ErrorResponse("the namespace is being deleted, so nothing can be created in it (not an RBAC problem): %v", err), nil
	case errors.As(err, &upstream):
		return nil, logical.CodedError(upstream.status, upstream.msg)
	case errors.As(err, &kube):
		status := kubeStatus(kube.err)
		if status == http.StatusBadRequest {
			return logical.ErrorResponse(err.Error()), nil
		}
		return nil, logical.CodedError(status, kubeErrorMessage(status, cluster, err))
	}
	return nil, err
}
