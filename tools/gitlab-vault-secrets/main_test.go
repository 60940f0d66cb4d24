package main

import (
	"encoding/json"
	"testing"
)

// The job payload decodes as the runner reads it: `file` defaults to true,
// and `$VAR` / `${VAR}` in every string, the auth data included, come from
// the job's variables (here the environment).
func TestJobSecretDecodeAndExpand(t *testing.T) {
	t.Setenv("VAULT_SERVER_URL", "http://127.0.0.1:8200")
	t.Setenv("VAULT_ID_TOKEN", "id-token")
	t.Setenv("ROLE", "cluster-a")
	for _, tc := range []struct {
		name, payload string
		wantFile      bool
	}{
		{"file unset", `{}`, true},
		{"file true", `{"file": true}`, true},
		{"file false", `{"file": false}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s jobSecret
			if err := json.Unmarshal([]byte(tc.payload), &s); err != nil {
				t.Fatal(err)
			}
			if got := s.isFile(); got != tc.wantFile {
				t.Errorf("isFile() = %v, want %v", got, tc.wantFile)
			}
		})
	}

	var v vaultSecret
	payload := `{"server": {"url": "${VAULT_SERVER_URL}", "auth": {"name": "jwt", "path": "jwt",
		"data": {"jwt": "$VAULT_ID_TOKEN", "role": "ci", "n": 1}}},
		"engine": {"name": "generic", "path": "scanner"}, "path": "creds/${ROLE}", "field": "kubeconfig"}`
	if err := json.Unmarshal([]byte(payload), &v); err != nil {
		t.Fatal(err)
	}
	v.expand()
	for _, c := range []struct{ name, got, want string }{
		{"url", v.Server.URL, "http://127.0.0.1:8200"},
		{"jwt", v.AuthData()["jwt"].(string), "id-token"},
		{"role", v.AuthData()["role"].(string), "ci"},
		{"path", v.SecretPath(), "creds/cluster-a"},
		{"auth name", v.AuthName(), "jwt"},
		{"engine", v.EngineName() + " " + v.EnginePath(), "generic scanner"},
		{"field", v.SecretField(), "kubeconfig"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if n, ok := v.AuthData()["n"].(float64); !ok || n != 1 {
		t.Errorf("a non-string auth datum changed: %v", v.AuthData()["n"])
	}
}
