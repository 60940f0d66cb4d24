package acceptance

import (
	"net/http"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Test 3: `vault lease revoke <id>` and `vault lease revoke -prefix
// scanner/creds/cluster-a` get the tokens rejected within 15 s and leave no
// bound Secret.
func TestRevoke(t *testing.T) {
	t.Parallel()
	role := stack.RoleName

	t.Run("lease id", func(t *testing.T) {
		done := step(t, "issue one credential")
		c := readCreds(t, role, nil)
		if code := tokenStatus(t, c.Token); code != http.StatusOK {
			t.Fatalf("fresh token: HTTP %d, want 200", code)
		}
		if n := secretCount(t, role); n != 1 {
			t.Fatalf("bound Secrets: %d, want 1", n)
		}
		done()

		done = step(t, "vault lease revoke %s", c.LeaseID)
		start := time.Now()
		mustVault(t, "lease", "revoke", c.LeaseID)
		t.Logf("revoke returned after %s", secs(time.Since(start)))
		took := waitTokenStatus(t, c.Token, http.StatusUnauthorized, 15*time.Second, start)
		t.Logf("token rejected %s after revoke", secs(took))
		waitSecretCount(t, role, 0, 5*time.Second)
		done()
	})

	t.Run("prefix", func(t *testing.T) {
		done := step(t, "issue three credentials")
		var cs []*creds
		for i := 0; i < 3; i++ {
			c := readCreds(t, role, nil)
			if code := tokenStatus(t, c.Token); code != http.StatusOK {
				t.Fatalf("fresh token %d: HTTP %d, want 200", i, code)
			}
			cs = append(cs, c)
		}
		if n := secretCount(t, role); n != 3 {
			t.Fatalf("bound Secrets: %d, want 3", n)
		}
		done()

		prefix := stack.Mount + "/creds/" + role
		done = step(t, "vault lease revoke -prefix %s", prefix)
		start := time.Now()
		mustVault(t, "lease", "revoke", "-prefix", prefix)
		t.Logf("revoke -prefix returned after %s", secs(time.Since(start)))
		var tokens []string
		for _, c := range cs {
			tokens = append(tokens, c.Token)
		}
		for i, took := range waitAllRejected(t, tokens, 15*time.Second, start) {
			t.Logf("token %d rejected %s after revoke -prefix", i, secs(took))
		}
		waitSecretCount(t, role, 0, 5*time.Second)
		done()
	})
}
