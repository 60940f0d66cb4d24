package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

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
