package acceptance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// vaultAuditEntry is the part of a Vault file-audit line we look at.
type vaultAuditEntry struct {
	Type    string `json:"type"`
	Request struct {
		ID   string `json:"id"`
		Path string `json:"path"`
	} `json:"request"`
	Response struct {
		Data map[string]any `json:"data"`
	} `json:"response"`
}

// readJSONLines decodes every line of a JSON-lines log. A line that does
// not decode fails the test, except a last line without its newline (the
// writer is still at it).
func readJSONLines[T any](t *testing.T, path string) []T {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i < len(b)-1 {
		b = b[:i+1] // drop a partial last line
	}
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var e T
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s line %d is not JSON: %v: %.200s", path, n, err, sc.Bytes())
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return out
}

// plaintextIn returns the names of the secrets that appear in the
// JSON-lines log at path: inside any decoded string value (so JSON escaping
// cannot hide a multi-line YAML or a JSON document), or in the raw text as
// is or JSON-escaped.
func plaintextIn(t *testing.T, path string, secrets map[string]string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var values []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			values = append(values, x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				values = append(values, k)
				walk(e)
			}
		}
	}
	for _, line := range readJSONLines[any](t, path) {
		walk(line)
	}
	var found []string
	for name, secret := range secrets {
		esc, err := json.Marshal(secret)
		if err != nil {
			t.Fatal(err)
		}
		hit := bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, esc[1:len(esc)-1])
		for _, v := range values {
			hit = hit || strings.Contains(v, secret)
		}
		if hit {
			found = append(found, name)
		}
	}
	slices.Sort(found)
	return found
}

// kubeAuditEvent is the part of a kube-apiserver audit event we look at.
type kubeAuditEvent struct {
	Verb        string            `json:"verb"`
	RequestURI  string            `json:"requestURI"`
	Annotations map[string]string `json:"annotations"`
	User        struct {
		Username string              `json:"username"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// credentialAuditEvents waits up to 20 s for the kube-apiserver audit
// events that carry credentialID: a request made with the token (user.extra
// credential-id) and the TokenRequest that issued it (annotation
// issued-credential-id). Either is nil if it never showed.
func credentialAuditEvents(t *testing.T, credentialID string) (used, issued *kubeAuditEvent, err error) {
	t.Helper()
	_, err = stack.Poll(testCtx(t, time.Minute), 20*time.Second, 500*time.Millisecond, func() (bool, error) {
		for _, ev := range readJSONLines[kubeAuditEvent](t, st.Kube.AuditLogPath) {
			if ids := ev.User.Extra["authentication.kubernetes.io/credential-id"]; len(ids) == 1 && ids[0] == credentialID {
				used = &ev
			}
			if ev.Annotations["authentication.kubernetes.io/issued-credential-id"] == credentialID {
				issued = &ev
			}
		}
		return used != nil && issued != nil, nil
	})
	return used, issued, err
}

// Test 6: a file audit device HMACs the token and kubeconfig; once tuned,
// the credential_id in Vault's audit log equals the credential id that the
// kube-apiserver audit log records for requests made with the token.
func TestAuditNoPlaintextAndCredentialIDJoin(t *testing.T) {
	auditPath := filepath.Join(st.Vault.Dir, "audit.log")
	credsPath := stack.Mount + "/creds/" + stack.RoleName

	done := step(t, "vault audit enable file file_path=%s", auditPath)
	mustVault(t, "audit", "enable", "file", "file_path="+auditPath)
	t.Cleanup(func() { vaultCLI(t, "audit", "disable", "file/") })
	done()

	done = step(t, "read creds; the audit log holds no token and no kubeconfig in plaintext")
	c := readCreds(t, stack.RoleName, nil)
	secrets := map[string]string{"token": c.Token, "kubeconfig": c.Kubeconfig, "kubeconfig_json": c.KubeconfigJSON}
	// The header segment is the same for every token of the API server's
	// signing key: only the payload and signature are this credential's.
	for i, part := range strings.Split(c.Token, ".")[1:] {
		secrets["JWT part "+string(rune('1'+i))] = part
	}
	for name, v := range secrets {
		if v == "" {
			t.Errorf("%s is empty in the response", name)
		}
	}
	if found := plaintextIn(t, auditPath, secrets); len(found) > 0 {
		t.Errorf("the Vault audit log contains in plaintext: %s", strings.Join(found, ", "))
	}
	var found *vaultAuditEntry
	entries := readJSONLines[vaultAuditEntry](t, auditPath)
	for i := range entries {
		if entries[i].Type == "response" && entries[i].Request.Path == credsPath && entries[i].Response.Data != nil {
			found = &entries[i]
		}
	}
	if found == nil {
		t.Fatalf("no response entry for %s in the audit log (%d entries)", credsPath, len(entries))
	}
	for _, k := range []string{"service_account_token", "kubeconfig", "kubeconfig_json", "credential_id"} {
		if v := str(found.Response.Data[k]); !strings.HasPrefix(v, "hmac-sha256:") {
			t.Errorf("audit response data.%s = %.40q, want an hmac-sha256: value", k, v)
		}
	}
	done()

	done = step(t, "vault secrets tune -audit-non-hmac-response-keys=credential_id %s/", stack.Mount)
	mustVault(t, "secrets", "tune", "-audit-non-hmac-response-keys=credential_id", stack.Mount+"/")
	t.Cleanup(func() {
		// Restore the default (everything HMAC'd).
		vaultCLI(t, "write", "sys/mounts/"+stack.Mount+"/tune", "audit_non_hmac_response_keys=")
	})
	c2 := readCreds(t, stack.RoleName, nil)
	var logged string
	for _, e := range readJSONLines[vaultAuditEntry](t, auditPath) {
		if e.Type == "response" && e.Request.Path == credsPath && str(e.Response.Data["credential_id"]) == c2.CredentialID {
			logged = c2.CredentialID
			if v := str(e.Response.Data["service_account_token"]); !strings.HasPrefix(v, "hmac-sha256:") {
				t.Errorf("after tuning, the token is logged as %.40q, want HMAC'd", v)
			}
		}
	}
	if logged == "" || !strings.HasPrefix(logged, "JTI=") {
		t.Fatalf("the audit log has no response with credential_id %q in clear", c2.CredentialID)
	}
	done()

	done = step(t, "a request with the token: kube-apiserver audit carries the same credential id")
	if code := tokenStatus(t, c2.Token); code != 200 {
		t.Fatalf("GET pods with the token: HTTP %d, want 200", code)
	}
	used, issued, _ := credentialAuditEvents(t, logged)
	if used == nil {
		t.Fatalf("no kube-apiserver audit event with user.extra credential-id %q", logged)
	}
	if used.User.Username != "system:serviceaccount:scanner-namespace:scanner-sa" {
		t.Errorf("audit event user %q, want the scanner SA", used.User.Username)
	}
	t.Logf("kube audit: %s %s by %s with credential-id %s", used.Verb, used.RequestURI, used.User.Username, logged)
	if issued == nil {
		t.Errorf("no kube-apiserver audit event with annotation issued-credential-id %q (the TokenRequest)", logged)
	} else if issued.User.Username != "system:serviceaccount:vault-plugin-scanner:vault-plugin-scanner" {
		t.Errorf("the TokenRequest was made by %q, want the token requester", issued.User.Username)
	} else {
		t.Logf("kube audit: issued by %s: %s %s", issued.User.Username, issued.Verb, issued.RequestURI)
	}
	done()
}

// The plaintext scan sees through JSON escaping: a YAML kubeconfig (new
// lines, quotes) and a JSON kubeconfig written by a JSON logger are found,
// and a log without them is clean. A plain substring search of the raw
// log finds neither.
func TestAuditPlaintextScanSeesEscapedValues(t *testing.T) {
	t.Parallel()
	yaml := "apiVersion: v1\nclusters:\n- cluster:\n    server: https://127.0.0.1:1\n  name: \"c\"\nusers:\n- user:\n    token: eyJx.eyJy.z\n"
	js := `{"apiVersion":"v1","users":[{"user":{"token":"eyJx.eyJy.z"}}]}`
	line, err := json.Marshal(map[string]any{"type": "response", "response": map[string]any{"data": map[string]any{"kubeconfig": yaml, "kubeconfig_json": js}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leaky, clean := filepath.Join(dir, "leaky.log"), filepath.Join(dir, "clean.log")
	if err := os.WriteFile(leaky, append(append([]byte(`{"type":"request"}`+"\n"), line...), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(clean, []byte(`{"type":"response","response":{"data":{"kubeconfig":"hmac-sha256:00"}}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"kubeconfig": yaml, "kubeconfig_json": js}
	if bytes.Contains(line, []byte(yaml)) || bytes.Contains(line, []byte(js)) {
		t.Fatalf("the raw line holds the values unescaped: this self-test proves nothing")
	}
	if got := plaintextIn(t, leaky, secrets); !slices.Equal(got, []string{"kubeconfig", "kubeconfig_json"}) {
		t.Errorf("plaintextIn on a log holding both: %v, want both", got)
	}
	if got := plaintextIn(t, clean, secrets); len(got) != 0 {
		t.Errorf("plaintextIn on a clean log: %v, want none", got)
	}
}
