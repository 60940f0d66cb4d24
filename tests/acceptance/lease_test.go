package acceptance

import (
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Test 2: a 1-minute lease works at once and its token is rejected (401)
// about 65 s later, when Vault has revoked it; its Secret is gone.
func TestOneMinuteLeaseExpires(t *testing.T) {
	t.Parallel()
	role := "short-lease"
	writeRole(t, role)

	done := step(t, "read %s/creds/%s?ttl=1m", stack.Mount, role)
	c := readCreds(t, role, url.Values{"ttl": {"1m"}})
	if c.LeaseDuration != 60 {
		t.Fatalf("lease_duration %d, want 60", c.LeaseDuration)
	}
	if code := tokenStatus(t, c.Token); code != http.StatusOK {
		t.Fatalf("fresh token: HTTP %d, want 200", code)
	}
	if n := secretCount(t, role); n != 1 {
		t.Fatalf("bound Secrets: %d, want 1", n)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(c.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	if r := kubectl(t, kc, "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl with the fresh kubeconfig: %s", r)
	}
	done()

	done = step(t, "poll until the token is rejected (up to 90 s after issue)")
	remaining := 90*time.Second - time.Since(c.Issued)
	took := waitTokenStatus(t, c.Token, http.StatusUnauthorized, remaining, c.Issued)
	t.Logf("token rejected %s after issue (lease 60 s)", secs(took))
	if took < 59*time.Second {
		t.Errorf("token rejected after %s, before its 60 s lease ended", secs(took))
	}
	done()

	done = step(t, "kubectl gets Unauthorized; no bound Secret is left; the lease is gone")
	if r := kubectl(t, kc, "get", "pods"); r.ExitCode == 0 || !strings.Contains(r.Stderr, "Unauthorized") {
		t.Errorf("kubectl with the expired kubeconfig: want Unauthorized: %s", r)
	}
	if n := secretCount(t, role); n != 0 {
		t.Errorf("bound Secrets after expiry: %d, want 0", n)
	}
	if r := vaultCLI(t, "lease", "lookup", c.LeaseID); r.ExitCode == 0 {
		t.Errorf("vault lease lookup %s still finds the lease: %s", c.LeaseID, r)
	}
	done()
}
