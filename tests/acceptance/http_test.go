package acceptance

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// vaultResponse is Vault's HTTP response envelope.
type vaultResponse struct {
	LeaseID       string            `json:"lease_id"`
	LeaseDuration int               `json:"lease_duration"`
	Renewable     bool              `json:"renewable"`
	Data          map[string]any    `json:"data"`
	Warnings      []string          `json:"warnings"`
	Errors        []string          `json:"errors"`
	Headers       map[string]string `json:"-"`
}

// rawVault sends one HTTP request to Vault with only X-Vault-Token (and a
// Content-Type when there is a body), like vault-action, GitLab and Jenkins.
func rawVault(t *testing.T, method, path string, body any) (int, vaultResponse) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(testCtx(t, time.Minute), method, st.Vault.Addr+"/v1/"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", st.Vault.RootToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var vr vaultResponse
	if len(b) > 0 {
		if err := json.Unmarshal(b, &vr); err != nil {
			t.Fatalf("%s %s: HTTP %d, body not JSON: %v: %.300s", method, path, resp.StatusCode, err, b)
		}
	}
	if vr.LeaseID != "" {
		revokeAtEnd(t, vr.LeaseID)
	}
	return resp.StatusCode, vr
}

// Test 5: GET with ?ttl=, update with a body, the plain GET of CI tools,
// `vault read -field=kubeconfig`, and kubeconfig_json, each with kubectl.
func TestCredsHTTPAndCLIForms(t *testing.T) {
	path := stack.Mount + "/creds/" + stack.RoleName
	cases := []struct {
		name, method, query string
		body                any
		wantLease           int
		wantWarning         bool
	}{
		{"plain GET (vault-action, GitLab, Jenkins)", http.MethodGet, "", nil, 900, false},
		{"GET ?ttl=2m", http.MethodGet, "?ttl=2m", nil, 120, false},
		{"PUT body {ttl: 3m}", http.MethodPut, "", map[string]any{"ttl": "3m"}, 180, false},
		{"POST body {ttl: 90}", http.MethodPost, "", map[string]any{"ttl": 90}, 90, false},
		{"GET ?ttl=2h is capped at max_ttl 1h with a warning", http.MethodGet, "?ttl=2h", nil, 3600, true},
	}
	var plainGET vaultResponse
	for _, c := range cases {
		done := step(t, "%s: %s /v1/%s%s", c.name, c.method, path, c.query)
		before := time.Now()
		code, vr := rawVault(t, c.method, path+c.query, c.body)
		if code != http.StatusOK {
			t.Fatalf("HTTP %d, want 200: errors %v", code, vr.Errors)
		}
		if vr.LeaseDuration != c.wantLease || vr.Renewable {
			t.Errorf("lease_duration %d renewable %v, want %d and false", vr.LeaseDuration, vr.Renewable, c.wantLease)
		}
		if c.wantWarning != (len(vr.Warnings) > 0) {
			t.Errorf("warnings %q, want warning: %v", vr.Warnings, c.wantWarning)
		}
		exp, err := time.Parse(time.RFC3339, str(vr.Data["expires_at"]))
		if err != nil {
			t.Errorf("expires_at %v: %v", vr.Data["expires_at"], err)
		} else if d := exp.Sub(before); d < time.Duration(c.wantLease-5)*time.Second || d > time.Duration(c.wantLease+5)*time.Second {
			t.Errorf("expires_at %s is %s after the request, want about %ds", exp, d.Round(time.Second), c.wantLease)
		}
		if c.query == "" && c.method == http.MethodGet {
			plainGET = vr
		}
		done()
	}

	done := step(t, "response data: documented flat string fields only")
	wantKeys := []string{"service_account_token", "kubeconfig", "kubeconfig_json", "cluster", "service_account_name",
		"service_account_namespace", "kubernetes_host", "kubernetes_ca_cert", "credential_id", "expires_at"}
	for _, k := range wantKeys {
		if v, ok := plainGET.Data[k].(string); !ok || v == "" {
			t.Errorf("data.%s: %#v, want a non-empty string", k, plainGET.Data[k])
		}
	}
	for _, bad := range []string{"data", "lease_id", "lease_duration", "renewable", "request_id"} {
		if _, ok := plainGET.Data[bad]; ok {
			t.Errorf("data has reserved key %q", bad)
		}
	}
	if !strings.HasPrefix(str(plainGET.Data["credential_id"]), "JTI=") {
		t.Errorf("credential_id %q, want JTI=<jti>", plainGET.Data["credential_id"])
	}
	done()

	dir := t.TempDir()
	done = step(t, "kubeconfig_json (single line) written to a file works with kubectl")
	kj := str(plainGET.Data["kubeconfig_json"])
	if strings.Contains(strings.TrimRight(kj, "\n"), "\n") || !json.Valid([]byte(kj)) {
		t.Fatalf("kubeconfig_json is not single-line JSON: %.200q", kj)
	}
	jsonFile := filepath.Join(dir, "kubeconfig.json")
	if err := stack.WriteFile0600(jsonFile, []byte(kj)); err != nil {
		t.Fatal(err)
	}
	if r := kubectl(t, jsonFile, "get", "pods", "-n", stack.ScannerNamespace); r.ExitCode != 0 {
		t.Fatalf("kubectl with kubeconfig_json: %s", r)
	}
	if r := kubectl(t, jsonFile, "get", "pods", "-n", "kube-system"); r.ExitCode == 0 || !strings.Contains(r.Stderr, "Forbidden") {
		t.Fatalf("kubectl with kubeconfig_json in kube-system: want Forbidden: %s", r)
	}
	done()

	done = step(t, "vault read -field=kubeconfig > file (0600) works with kubectl")
	r := mustVault(t, "read", "-field=kubeconfig", path)
	// -field output has no lease id to revoke: find it via the Secret's
	// credential; the final check revokes everything left anyway.
	yamlFile := filepath.Join(dir, "kubeconfig.yaml")
	if err := os.WriteFile(yamlFile, []byte(r.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	assertMode(t, yamlFile, 0o600)
	if !strings.Contains(r.Stdout, "current-context:") || !strings.Contains(r.Stdout, "token: ") {
		t.Fatalf("vault read -field=kubeconfig output does not look like a kubeconfig:\n%.300s", r.Stdout)
	}
	if rr := kubectl(t, yamlFile, "get", "pods"); rr.ExitCode != 0 {
		t.Fatalf("kubectl with vault read -field=kubeconfig: %s", rr)
	}
	done()

	done = step(t, "revoke the -field lease (prefix of this role) and check no Secret is left")
	mustVault(t, "lease", "revoke", "-prefix", path)
	waitSecretCount(t, stack.RoleName, 0, 15*time.Second)
	done()
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
