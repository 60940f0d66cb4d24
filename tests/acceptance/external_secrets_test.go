package acceptance

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Role TTLs of the external-secrets tests: short, so the whole test takes
// about a minute (the refresh subtest, the longest, about 53 s), and far
// enough apart that a token killed by
// its login's expiry (20 s) cannot be mistaken for one that lived to its
// lease (90 s).
const (
	esoRefreshTTL      = 45 * time.Second
	esoRefreshInterval = 10 * time.Second
	esoShortLogin      = 20 * time.Second
	esoShortLoginTTL   = 90 * time.Second // the role TTL its login undercuts
	esoLongLogin       = 60 * time.Second
	esoLongLoginTTL    = 40 * time.Second // at most the login TTL: the fix
)

// external-secrets v0.16.2, unmodified, out of cluster: its
// VaultDynamicSecret generator logs in with Vault's kubernetes auth method
// as a service account of the namespace and writes the plugin's creds/
// response into a Secret. One operator serves the parallel subtests and is
// stopped before their leases are revoked.
func TestExternalSecretsVaultDynamicSecret(t *testing.T) {
	t.Parallel()
	bin, crds, err := stack.ResolveExternalSecrets(testCtx(t, 30*time.Minute), t)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string][]string{
		"eso-get":      {"ttl=90s"},
		"eso-post":     {"ttl=90s", "max_ttl=2m"},
		"eso-refresh":  {"ttl=" + esoRefreshTTL.String()},
		"eso-short":    {"ttl=" + esoShortLoginTTL.String()},
		"eso-long":     {"ttl=" + esoLongLoginTTL.String()},
		"eso-intruder": {"ttl=90s"},
	}
	done := step(t, "namespace %s, service account %s, kubernetes auth at auth/%s, policy %s, roles", esoNamespace, esoServiceAccount, esoAuthMount, esoPolicy)
	var policyRoles []string
	for role := range roles {
		policyRoles = append(policyRoles, role)
	}
	setupESOVaultAuth(t, policyRoles)
	esoLoginRole(t, "eso-scans", 10*time.Minute)
	esoLoginRole(t, "eso-short-login", esoShortLogin)
	esoLoginRole(t, "eso-long-login", esoLongLogin)
	for role, fields := range roles {
		writeRole(t, role, fields...)
		revokeRoleLeasesAtEnd(t, role)
	}
	// Outside the policy: a generator naming it must get nothing.
	writeRole(t, "eso-forbidden", "ttl=90s")
	revokeRoleLeasesAtEnd(t, "eso-forbidden")
	done()

	done = step(t, "start external-secrets %s", bin)
	eso, err := st.StartExternalSecrets(testCtx(t, 3*time.Minute), bin, crds)
	if err != nil {
		t.Fatal(err)
	}
	// Registered last, so it runs first: nothing issues a lease after the
	// cleanups above revoke them.
	t.Cleanup(eso.Stop)
	addrs, err := stack.ListenAddrs(eso.Proc.Pid())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if !a.Addr().IsLoopback() {
			t.Errorf("external-secrets listens on %s: only loopback listeners are allowed", a)
		}
	}
	t.Logf("external-secrets listens on %d addresses: %v", len(addrs), addrs)
	done()

	seen := &tokenSet{}
	t.Run("group", func(t *testing.T) {
		t.Run("GET with role defaults writes a working kubeconfig", func(t *testing.T) {
			t.Parallel()
			esoGet(t, seen)
		})
		t.Run("POST spec.parameters reach the plugin", func(t *testing.T) {
			t.Parallel()
			esoPost(t, seen)
		})
		t.Run("each refresh issues a lease and revokes none", func(t *testing.T) {
			t.Parallel()
			esoRefresh(t, seen)
		})
		t.Run("a login shorter than the lease kills the token early", func(t *testing.T) {
			t.Parallel()
			esoShortLoginKills(t, seen)
		})
		t.Run("a login at least as long as the lease keeps it", func(t *testing.T) {
			t.Parallel()
			esoLongLoginKeeps(t, seen)
		})
		t.Run("the policy and the auth role bound what a namespace gets", func(t *testing.T) {
			t.Parallel()
			esoRefusals(t)
		})
	})

	done = step(t, "no token in the operator's log")
	b, err := os.ReadFile(eso.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	checked := seen.count()
	if n := seen.leakedInto(string(b)); n > 0 || checked == 0 || !strings.Contains(string(b), "scan-forbidden") {
		t.Errorf("%d of %d issued tokens appear in the external-secrets log %s (%d bytes, reconciles logged: %v)",
			n, checked, eso.LogPath, len(b), strings.Contains(string(b), "scan-forbidden"))
	}
	t.Logf("%d tokens checked against %d bytes of external-secrets log", checked, len(b))
	done()
}

// (1) GET, no parameters: the role's defaults. The Secret holds every
// response field; its kubeconfig works with kubectl as it is.
func esoGet(t *testing.T, seen *tokenSet) {
	applyESOSync(t, esoSync{Name: "scan-get", Path: stack.Mount + "/creds/eso-get", Method: "GET", LoginRole: "eso-scans", Refresh: "1h"})
	done := step(t, "ExternalSecret scan-get (GET %s/creds/eso-get) writes Secret scan-get-kubeconfig", stack.Mount)
	s := waitESOSecret(t, "scan-get", "", 90*time.Second)
	seen.add(s.token)
	for _, k := range []string{"kubeconfig", "kubeconfig_json", "service_account_token", "credential_id", "expires_at", "cluster"} {
		if s.data[k] == "" {
			t.Errorf("Secret has no %s (keys: %d)", k, len(s.data))
		}
	}
	// The role's 90 s default, not a parameter: the lease ends about 90 s
	// after the Secret appeared.
	if d := s.expiresAt.Sub(s.at); d < 60*time.Second || d > 91*time.Second {
		t.Errorf("expires_at is %s after the sync, want the role default of 90s", secs(d))
	}
	done()

	done = step(t, "kubectl with the Secret's kubeconfig")
	if r := kubectl(t, writeKubeconfigFile(t, s), "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl get pods with the synced kubeconfig: %s", r)
	}
	leases := roleLeases(t, "eso-get")
	if len(leases) < 1 {
		t.Errorf("%d leases of eso-get after the sync", len(leases))
	}
	done()

	done = step(t, "deleting the ExternalSecret and its generator revokes nothing")
	if res, err := st.KubectlAdmin(testCtx(t, time.Minute), "delete", "externalsecret,vaultdynamicsecrets.generators.external-secrets.io", "scan-get", "-n", esoNamespace, "--wait"); err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl delete: %v %s", err, res)
	}
	// A revoked token dies within about 10 s (the API server's token cache).
	time.Sleep(15 * time.Second)
	if code := tokenStatus(t, s.token); code != http.StatusOK {
		t.Errorf("15s after the ExternalSecret was deleted: HTTP %d, want 200", code)
	}
	if after := roleLeases(t, "eso-get"); !slices.Equal(after, leases) {
		t.Errorf("leases of eso-get changed after the delete: %d before, %d after", len(leases), len(after))
	}
	done()
}

// (1) POST with spec.parameters: the ttl parameter reaches the plugin
// (40 s instead of the role's 90 s).
func esoPost(t *testing.T, seen *tokenSet) {
	applyESOSync(t, esoSync{Name: "scan-post", Path: stack.Mount + "/creds/eso-post", Method: "POST",
		Parameters: map[string]string{"ttl": "40s"}, LoginRole: "eso-scans", Refresh: "1h"})
	done := step(t, "ExternalSecret scan-post (POST %s/creds/eso-post ttl=40s) writes its Secret", stack.Mount)
	s := waitESOSecret(t, "scan-post", "", 90*time.Second)
	seen.add(s.token)
	if d := s.expiresAt.Sub(s.at); d > 41*time.Second {
		t.Errorf("expires_at is %s after the sync: the ttl=40s parameter did not reach the plugin", secs(d))
	}
	if r := kubectl(t, writeKubeconfigFile(t, s), "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl get pods with the synced kubeconfig: %s", r)
	}
	done()
}

// (2) Every refresh is a new login and a new lease; the replaced lease is
// never revoked, so its token works until its own expiry. The live leases
// stay bounded by TTL / refresh interval (each sync may issue two).
func esoRefresh(t *testing.T, seen *tokenSet) {
	const role = "eso-refresh"
	applyESOSync(t, esoSync{Name: "scan-refresh", Path: stack.Mount + "/creds/" + role, Method: "GET", LoginRole: "eso-scans",
		Refresh: esoRefreshInterval.String(), ServiceAccount: esoRefreshAccount})
	done := step(t, "ExternalSecret scan-refresh (refreshInterval %s, role TTL %s): first sync", esoRefreshInterval, esoRefreshTTL)
	first := waitESOSecret(t, "scan-refresh", "", 90*time.Second)
	seen.add(first.token)
	done()

	done = step(t, "watch the Secret and the role's leases until the first token's expiry")
	synced := []esoSynced{first}
	leaseIssued := map[string]time.Time{}
	maxLive := 0
	ctx := testCtx(t, 2*esoRefreshTTL)
	for time.Now().Before(first.expiresAt.Add(-3 * time.Second)) {
		data, ok, err := esoSecret(ctx, "scan-refresh")
		if err != nil {
			t.Fatal(err)
		}
		if tok := data["service_account_token"]; ok && tok != synced[len(synced)-1].token {
			synced = append(synced, esoSynced{at: time.Now(), token: tok})
			seen.add(tok)
			if len(synced) == 2 {
				// Replaced, not revoked.
				if code := tokenStatus(t, first.token); code != http.StatusOK {
					t.Errorf("the first token got HTTP %d right after its Secret was refreshed, want 200", code)
				}
			}
		}
		live := roleLeases(t, role)
		for _, id := range live {
			if _, known := leaseIssued[id]; !known {
				leaseIssued[id] = leaseIssueTime(t, id)
			}
		}
		maxLive = max(maxLive, len(live))
		time.Sleep(time.Second)
	}
	if code := tokenStatus(t, first.token); code != http.StatusOK {
		t.Errorf("the first token got HTTP %d 3s before its expires_at, want 200: it lives to its TTL", code)
	}
	done()

	done = step(t, "the first token dies at its expires_at")
	took := waitTokenStatus(t, first.token, http.StatusUnauthorized, time.Until(first.expiresAt)+25*time.Second, first.expiresAt)
	if took < -2*time.Second {
		t.Errorf("the first token was rejected %s before its expires_at", secs(-took))
	}
	done()

	syncsAlive := int(esoRefreshTTL/esoRefreshInterval) + 1
	logins := tokenRequestsFor(t, esoNamespace, esoRefreshAccount)
	bursts := issueBursts(leaseIssued)
	t.Logf("%d tokens synced into the Secret, %d leases seen in %d bursts of %v (issued within 1 s of each other), at most %d live at once (TTL/refresh+1 = %d syncs), %d logins; first token rejected %s after its expires_at",
		len(synced), len(leaseIssued), len(bursts), bursts, maxLive, syncsAlive, logins, secs(took))
	// A login per lease: none is reused, so each lease's login is as old as
	// the lease.
	if logins < len(leaseIssued) {
		t.Errorf("%d logins (TokenRequests for %s) for %d leases, want one login per lease", logins, esoRefreshAccount, len(leaseIssued))
	}
	// A sync issues one lease, sometimes two about 50 ms apart; never more.
	if len(bursts) > 0 && slices.Max(bursts) > 2 {
		t.Errorf("a burst of %d leases within 1 s: more than the one duplicate per sync", slices.Max(bursts))
	}
	if len(synced) < 3 {
		t.Errorf("%d tokens synced in %s with refreshInterval %s, want at least 3", len(synced), esoRefreshTTL, esoRefreshInterval)
	}
	// Nothing is revoked, so leases pile up to one per sync within a TTL;
	// the duplicates (two leases for one sync) at most double that.
	if maxLive < 3 || maxLive > 2*syncsAlive {
		t.Errorf("at most %d live leases at once, want between 3 and %d", maxLive, 2*syncsAlive)
	}
}

// (3) The login token lives 20 s, the lease 90 s: when Vault expires the
// login it revokes the lease it created, the plugin deletes the bound
// Secret and the Kubernetes token dies, about 70 s early. external-secrets
// still reports Ready over the dead kubeconfig.
func esoShortLoginKills(t *testing.T, seen *tokenSet) {
	const role = "eso-short"
	applyESOSync(t, esoSync{Name: "scan-short-login", Path: stack.Mount + "/creds/" + role, Method: "GET", LoginRole: "eso-short-login", Refresh: "1h"})
	done := step(t, "ExternalSecret scan-short-login (login TTL %s, role TTL %s) writes its Secret", esoShortLogin, esoShortLoginTTL)
	s := waitESOSecret(t, "scan-short-login", "", 90*time.Second)
	seen.add(s.token)
	if r := kubectl(t, writeKubeconfigFile(t, s), "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl get pods with the synced kubeconfig: %s", r)
	}
	done()

	done = step(t, "the token dies with the login, long before its expires_at")
	took := waitTokenStatus(t, s.token, http.StatusUnauthorized, esoShortLoginTTL, s.at)
	early := s.expiresAt.Sub(s.at) - took
	t.Logf("token rejected %s after the sync, %s before its expires_at", secs(took), secs(early))
	if early < 30*time.Second {
		t.Errorf("the token died only %s before its expires_at: the login's expiry did not end it", secs(early))
	}
	if n := len(roleLeases(t, role)); n != 0 {
		t.Errorf("%d leases of %s left after the login expired, want 0 (Vault revokes them with the login)", n, role)
	}
	done()

	done = step(t, "external-secrets still reports Ready over the dead kubeconfig")
	cond := esoReadyCondition(t, esoNamespace, "scan-short-login")
	data, ok, err := esoSecret(testCtx(t, time.Minute), "scan-short-login")
	if err != nil || !ok {
		t.Fatalf("Secret scan-short-login-kubeconfig: ok %v, %v", ok, err)
	}
	t.Logf("Ready=%s (%s); the Secret holds the dead token: %v", cond.Status, cond.Reason, data["service_account_token"] == s.token)
	if cond.Status != "True" || data["service_account_token"] != s.token {
		t.Errorf("Ready=%s %s, Secret still holds the dead token: %v; the README says external-secrets keeps reporting Ready over it", cond.Status, cond.Reason, data["service_account_token"] == s.token)
	}
	done()
}

// (3) The fix: a login TTL at least the lease's. The same flow keeps its
// token past the short login's 20 s, to its expires_at.
func esoLongLoginKeeps(t *testing.T, seen *tokenSet) {
	const role = "eso-long"
	applyESOSync(t, esoSync{Name: "scan-long-login", Path: stack.Mount + "/creds/" + role, Method: "GET", LoginRole: "eso-long-login", Refresh: "1h"})
	done := step(t, "ExternalSecret scan-long-login (login TTL %s, role TTL %s) writes its Secret", esoLongLogin, esoLongLoginTTL)
	s := waitESOSecret(t, "scan-long-login", "", 90*time.Second)
	seen.add(s.token)
	done()

	done = step(t, "the token works past the short login's lifetime, until its expires_at")
	sleepUntil(s.at.Add(esoShortLogin + 12*time.Second))
	if code := tokenStatus(t, s.token); code != http.StatusOK {
		t.Errorf("%s after the sync: HTTP %d, want 200", secs(time.Since(s.at)), code)
	}
	sleepUntil(s.expiresAt.Add(-3 * time.Second))
	if code := tokenStatus(t, s.token); code != http.StatusOK {
		t.Errorf("3s before its expires_at: HTTP %d, want 200", code)
	}
	took := waitTokenStatus(t, s.token, http.StatusUnauthorized, time.Until(s.expiresAt)+25*time.Second, s.expiresAt)
	t.Logf("token rejected %s after its expires_at (%s after the sync)", secs(took), secs(time.Since(s.at)))
	if took < -2*time.Second {
		t.Errorf("the token was rejected %s before its expires_at", secs(-took))
	}
	done()

	done = step(t, "external-secrets does not refetch at the lease's end: the Secret keeps the expired token")
	cond := esoReadyCondition(t, esoNamespace, "scan-long-login")
	data, ok, err := esoSecret(testCtx(t, time.Minute), "scan-long-login")
	if err != nil || !ok || data["service_account_token"] != s.token || cond.Status != "True" {
		t.Errorf("Ready=%s, Secret found %v (%v), still the expired token: %v; want Ready=True over the expired token until the next refreshInterval",
			cond.Status, ok, err, data["service_account_token"] == s.token)
	}
	done()
}

// Attackers: a writer in the managed namespace who names a role outside
// the namespace's policy, and a writer in another namespace who names the
// auth role with a service account of the same name. Neither gets a lease.
func esoRefusals(t *testing.T) {
	applyESOSync(t, esoSync{Name: "scan-forbidden", Path: stack.Mount + "/creds/eso-forbidden", Method: "GET", LoginRole: "eso-scans", Refresh: "1h"})
	applyESOSync(t, esoSync{Name: "scan-intruder", Namespace: esoIntruderNamespace, Path: stack.Mount + "/creds/eso-intruder", Method: "GET", LoginRole: "eso-scans", Refresh: "1h"})
	for _, c := range []struct{ ns, name, role, refusedAt string }{
		// The login works; the read is refused by the policy.
		{esoNamespace, "scan-forbidden", "eso-forbidden", stack.Mount + "/creds/eso-forbidden"},
		// The login itself is refused by the auth role's namespace binding.
		{esoIntruderNamespace, "scan-intruder", "eso-intruder", "auth/" + esoAuthMount + "/login"},
	} {
		t.Run(c.name, func(t *testing.T) {
			done := step(t, "ExternalSecret %s/%s fails with 403 and no lease", c.ns, c.name)
			var warnings []string
			_, err := stack.Poll(testCtx(t, 2*time.Minute), 90*time.Second, time.Second, func() (bool, error) {
				warnings = esoWarnings(t, c.ns, c.name)
				return len(warnings) > 0, nil
			})
			if err != nil {
				t.Fatalf("no Warning event for %s/%s: %v", c.ns, c.name, err)
			}
			if cond := esoReadyCondition(t, c.ns, c.name); cond.Status != "False" {
				t.Errorf("Ready=%s %s, want False", cond.Status, cond.Reason)
			}
			if all := strings.Join(warnings, "\n"); !strings.Contains(all, "403") || !strings.Contains(all, c.refusedAt) {
				t.Errorf("warnings do not report Vault's 403 at %s: %q", c.refusedAt, warnings)
			}
			if n := len(roleLeases(t, c.role)); n != 0 {
				t.Errorf("%d leases of %s, want 0", n, c.role)
			}
			t.Logf("warning: %s", clipped(warnings[0], 300))
			done()
		})
	}
	if _, ok, err := esoSecret(testCtx(t, time.Minute), "scan-forbidden"); err != nil || ok {
		t.Errorf("Secret scan-forbidden-kubeconfig exists: %v %v", ok, err)
	}
}

func clipped(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
