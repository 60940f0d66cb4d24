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

// The one way into and out of a handler: refuseMistypedFields (called by
// HandleRequest) checks every field's type before the SDK converts it; each
// route's callback (entry, or forRole for creds/ and kubeconfig/) then
// checks unknown fields and the {name} segment; and respond turns whatever
// error the handler returns into the status that says whether retrying
// helps.

// refuseMistypedFields answers 400 for the first field (in name order)
// whose value does not convert to its type, naming the field and the type,
// never the value.
func (b *backend) refuseMistypedFields(req *logical.Request) *logical.Response {
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

// handler is what a route does once its request passed the prologue;
// name is the path's {name} segment, "" for paths without one.
type handler func(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error)

// Prologue options: which kind of name the path carries, and whether
// unknown fields are refused (writes and credential reads, where a typo in
// a security setting must fail; entry reads, lists and deletes ignore
// query parameters, as Vault does).
const (
	noName      = ""
	clusterName = "cluster"
	roleName    = "role"
)

// entry is every route's one prologue and error path: unknown fields (when
// strict), then the {name} segment, then the handler, whose error respond
// classifies.
func (b *backend) entry(nameKind string, strict bool, f handler) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		if strict {
			if err := unknownFields(d); err != nil {
				return respond("", nil, userError{err})
			}
		}
		var name string
		if nameKind != noName {
			name = d.Get("name").(string)
			if err := validateVaultName(nameKind, name); err != nil {
				return respond("", nil, userError{err})
			}
		}
		cluster := ""
		if nameKind == clusterName {
			cluster = name
		}
		resp, err := f(ctx, req, d, name)
		return respond(cluster, resp, err)
	}
}

// roleHandler is a path callback for one role (creds/, kubeconfig/).
type roleHandler func(ctx context.Context, req *logical.Request, d *framework.FieldData, name string, role *roleEntry) (*logical.Response, error)

// forRole is entry for the hot paths that act on a role: it loads the role
// from the cache and names the role's cluster in the error it classifies.
func (b *backend) forRole(f roleHandler) framework.OperationFunc {
	return b.entry(roleName, true, func(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
		role, err := b.roles.get(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if role == nil {
			return nil, userError{fmt.Errorf("role %q does not exist", name)}
		}
		resp, err := f(ctx, req, d, name, role)
		if missing := (clusterMissing{}); errors.As(err, &missing) && missing.name == role.Cluster {
			err = userError{fmt.Errorf("role %q uses cluster %q, which is not configured; write clusters/%s first", name, role.Cluster, role.Cluster)}
		}
		return respond(role.Cluster, resp, err)
	})
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
		kube     *kubeError
		upstream *upstreamError
	)
	switch {
	case errors.As(err, &user):
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
