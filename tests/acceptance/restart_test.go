package acceptance

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Test 8: Vault restarted (same file storage) while leases are outstanding:
// after unseal the short lease still expires (Secret deleted, token
// rejected) and a longer one can be revoked explicitly.
func TestVaultRestartKeepsLeases(t *testing.T) {
	role := "restart"
	writeRole(t, role)

	done := step(t, "issue a 30 s lease and a 10 min lease")
	short := readCreds(t, role, url.Values{"ttl": {"30s"}})
	long := readCreds(t, role, url.Values{"ttl": {"10m"}})
	if short.LeaseDuration != 30 || long.LeaseDuration != 600 {
		t.Errorf("lease durations %d and %d, want 30 and 600", short.LeaseDuration, long.LeaseDuration)
	}
	for _, c := range []*creds{short, long} {
		if code := tokenStatus(t, c.Token); code != http.StatusOK {
			t.Fatalf("fresh token: HTTP %d, want 200", code)
		}
	}
	if n := secretCount(t, role); n != 2 {
		t.Fatalf("bound Secrets: %d, want 2", n)
	}
	done()

	done = step(t, "restart Vault (same storage) and unseal")
	down, err := st.Vault.Restart(testCtx(t, 2*time.Minute))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("Vault was down and sealed for %s", secs(down))
	for _, c := range []*creds{short, long} {
		if r := vaultCLI(t, "lease", "lookup", c.LeaseID); r.ExitCode != 0 {
			t.Fatalf("lease %s not found after restart: %s", c.LeaseID, r)
		}
	}
	done()

	done = step(t, "revoke the 10 min lease after the restart")
	start := time.Now()
	mustVault(t, "lease", "revoke", long.LeaseID)
	took := waitTokenStatus(t, long.Token, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("10 min lease's token rejected %s after revoke", secs(took))
	if code := tokenStatus(t, short.Token); code != http.StatusOK && time.Now().Before(short.Issued.Add(30*time.Second)) {
		t.Errorf("the 30 s lease's token was rejected (HTTP %d) before its expiry", code)
	}
	done()

	done = step(t, "the 30 s lease still expires after the restart")
	took = waitTokenStatus(t, short.Token, http.StatusUnauthorized, time.Until(short.Issued.Add(30*time.Second))+40*time.Second, short.Issued)
	t.Logf("30 s lease's token rejected %s after issue", secs(took))
	if took < 29*time.Second {
		t.Errorf("token rejected %s after issue, before its 30 s lease ended", secs(took))
	}
	waitSecretCount(t, role, 0, 10*time.Second)
	if r := vaultCLI(t, "lease", "lookup", short.LeaseID); r.ExitCode == 0 {
		t.Errorf("the expired lease is still there: %s", r)
	}
	done()

	done = step(t, "the mount works after the restart")
	c := readCreds(t, stack.RoleName, nil)
	if code := tokenStatus(t, c.Token); code != http.StatusOK {
		t.Fatalf("token issued after restart: HTTP %d, want 200", code)
	}
	done()
}
