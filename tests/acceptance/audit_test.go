package acceptance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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

func readJSONLines[T any](t *testing.T, path string) []T {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e T
		if err := json.Unmarshal(sc.Bytes(), &e); err == nil {
			out = append(out, e)
		}
	}
	return out
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
	raw, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	audit := string(raw)
	secrets := map[string]string{"token": c.Token, "kubeconfig": c.Kubeconfig, "kubeconfig_json": c.KubeconfigJSON}
	for i, part := range strings.Split(c.Token, ".") {
		secrets["JWT part "+string(rune('0'+i))] = part
	}
	for name, v := range secrets {
		if v == "" {
			t.Errorf("%s is empty in the response", name)
			continue
		}
		if strings.Contains(audit, v) {
			t.Errorf("the Vault audit log contains the %s in plaintext", name)
		}
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
