package backend

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/hashicorp/vault/sdk/logical"
)

// testMountPoint is where the tests' requests say the plugin is mounted.
const testMountPoint = "scanner/"

// request runs one request through the framework like Vault would.
func request(t testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	t.Helper()
	req := &logical.Request{Operation: op, Path: path, Storage: s, Data: data, ID: uuid.NewString(), MountPoint: testMountPoint}
	return b.HandleRequest(context.Background(), req)
}

// mustOK fails the test unless the request succeeded without an error response.
func mustOK(t testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) *logical.Response {
	t.Helper()
	resp, err := request(t, b, s, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: %v", op, path, err)
	}
	if resp != nil && resp.IsError() {
		t.Fatalf("%s %s: error response: %v", op, path, resp.Error())
	}
	return resp
}

// mustBadRequest fails the test unless the request got a 400 whose message
// contains want.
func mustBadRequest(t testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}, want string) {
	t.Helper()
	resp, err := request(t, b, s, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: want a 400, got internal error %v", op, path, err)
	}
	if resp == nil || !resp.IsError() {
		t.Fatalf("%s %s: want a 400, got %#v", op, path, resp)
	}
	msg := resp.Error().Error()
	if !containsFold(msg, want) {
		t.Fatalf("%s %s: error %q does not mention %q", op, path, msg, want)
	}
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// assertNoSecretIn fails if text contains the token or the plugin's own JWT.
func assertNoSecretIn(t testing.TB, text, token string) {
	t.Helper()
	for _, secret := range []string{token, testRequesterJWT} {
		if secret != "" && strings.Contains(text, secret) {
			t.Errorf("a credential leaked into %q", text)
		}
	}
}
