package acceptance

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Vault HA: a 3-node Vault cluster with integrated (raft) storage on
// loopback, the plugin in every node's plugin directory. Credentials read
// through a standby work (the standby forwards to the active node); after the
// active node is killed with SIGKILL a new one is elected, revokes the leases
// that expire on its watch (their bound Secrets disappear, their tokens get
// 401) and revokes a long lease on request. The cluster is separate from the
// shared Vault; it issues for its own namespace (stack.HANamespace) on the
// shared API server, so its Secrets never mix with the other tests'.
func TestVaultHA(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 5*time.Minute)
	const (
		shortRole = "ha-short"
		longRole  = "ha-long"
		gapRole   = "ha-gap" // 1 s leases that expire while the cluster fails over
		shortTTL  = 40 * time.Second
	)

	done := step(t, "start a 3-node Vault cluster with raft storage")
	h, err := stack.StartVaultHA(ctx, st.Tools.Vault, filepath.Join(st.Dir, "vault-ha"), 3, t)
	if err != nil {
		t.Fatalf("vault HA cluster: %v", err)
	}
	t.Cleanup(func() { haCleanup(t, h) })
	active, _, err := h.WaitActive(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	standbys := h.Standbys(active)
	if len(standbys) != 2 {
		t.Fatalf("standbys: %d, want 2", len(standbys))
	}
	t.Logf("active %s at %s; standbys %s at %s, %s at %s", active.NodeID, active.Addr,
		standbys[0].NodeID, standbys[0].Addr, standbys[1].NodeID, standbys[1].Addr)
	done()

	done = step(t, "register and mount the plugin, write cluster and roles")
	if err := st.SetupVaultHA(ctx, h, active); err != nil {
		t.Fatal(err)
	}
	if err := stack.WriteHARole(ctx, active, shortRole, "ttl="+shortTTL.String(), "max_ttl=1h"); err != nil {
		t.Fatal(err)
	}
	if err := stack.WriteHARole(ctx, active, longRole, "ttl=10m", "max_ttl=1h"); err != nil {
		t.Fatal(err)
	}
	if err := stack.WriteHARole(ctx, active, gapRole, "ttl=1s", "max_ttl=1h"); err != nil {
		t.Fatal(err)
	}
	haSecretCount(t, ctx, "", 0)
	done()

	// (1) Through a standby.
	done = step(t, "read %s/creds/%s through standby %s", stack.Mount, shortRole, standbys[0].NodeID)
	c0 := haReadCreds(t, ctx, h, standbys[0], shortRole)
	if c0.LeaseDuration != int(shortTTL.Seconds()) {
		t.Fatalf("lease duration %d s, want %d s", c0.LeaseDuration, int(shortTTL.Seconds()))
	}
	if got := haIssuedBy(t, ctx, h, c0.CredentialID); len(got) != 1 || got[0] != active.NodeID {
		t.Fatalf("credential %s logged as issued by %v, want only the active node %s", c0.CredentialID, got, active.NodeID)
	}
	t.Logf("request sent to standby %s; issued by active %s (plugin log); lease %s", standbys[0].NodeID, active.NodeID, c0.LeaseID)
	kc := filepath.Join(t.TempDir(), "ha.kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(c0.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	res := kubectl(t, kc, "get", "pods", "-n", stack.HANamespace)
	if res.ExitCode != 0 {
		t.Fatalf("kubectl get pods with the kubeconfig from the standby: %s", res)
	}
	if code := haTokenStatus(t, ctx, c0.Token); code != http.StatusOK {
		t.Fatalf("fresh token: HTTP %d, want 200", code)
	}
	done()

	// (1b) Rotation on the active node, then issuing through a standby at once.
	done = step(t, "rotate-root on the active node %s, then read creds through standby %s at once", active.NodeID, standbys[1].NodeID)
	haRotateThenIssue(t, ctx, h, active, standbys[1], longRole)
	done()

	// (2) More leases through every node, then kill the active one.
	done = step(t, "issue 2 more %s leases and one %s lease", shortRole, longRole)
	shorts := []*creds{c0,
		haReadCreds(t, ctx, h, standbys[1], shortRole),
		haReadCreds(t, ctx, h, active, shortRole)}
	longs := []*creds{haReadCreds(t, ctx, h, standbys[0], longRole)}
	for _, c := range append(append([]*creds{}, shorts...), longs...) {
		if code := haTokenStatus(t, ctx, c.Token); code != http.StatusOK {
			t.Fatalf("fresh token of %s: HTTP %d, want 200", c.LeaseID, code)
		}
	}
	haSecretCount(t, ctx, shortRole, 3)
	haSecretCount(t, ctx, longRole, 1)
	haLeaseCount(t, ctx, active, shortRole, 3)
	haLeaseCount(t, ctx, active, longRole, 1)
	expiry := map[string]time.Time{}
	for _, c := range shorts {
		expiry[c.LeaseID] = haLeaseExpiry(t, ctx, active, c.LeaseID)
	}
	done()

	done = step(t, "issue a 1 s %s lease and at once SIGKILL the active node %s", gapRole, active.NodeID)
	gap := haReadCreds(t, ctx, h, active, gapRole)
	gapExpiry := haLeaseExpiry(t, ctx, active, gap.LeaseID)
	old := active
	killAt := time.Now()
	h.Kill(old)
	active, elect, err := h.WaitActive(ctx, 60*time.Second)
	if err != nil {
		t.Fatalf("after killing %s: %v", old.NodeID, err)
	}
	activeAt := time.Now()
	t.Logf("new active node %s at %s elected %s after the kill", active.NodeID, active.Addr, secs(elect))
	if activeAt.After(gapExpiry) {
		t.Logf("%s lease expired %s after the kill, %s before the new active node was up (expired with no active node)",
			gapRole, secs(gapExpiry.Sub(killAt)), secs(activeAt.Sub(gapExpiry)))
	} else {
		t.Logf("%s lease expires %s after the new active node was up (election faster than the lease)", gapRole, secs(gapExpiry.Sub(activeAt)))
	}
	haWaitSecretCount(t, ctx, gapRole, 0, 30*time.Second)
	gapGone := time.Now()
	t.Logf("RESULT vault-ha lease expired during failover: Secret gone %s after expiry, %s after the new active node was up",
		secs(gapGone.Sub(gapExpiry)), secs(gapGone.Sub(activeAt)))
	haWaitRejected(t, ctx, []string{gap.Token}, 15*time.Second)
	// The new active node has the mount and every lease.
	served, err := stack.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		_, err := haLookup(ctx, active, longs[0].LeaseID)
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("lease lookup through the new active node: %v", err)
	}
	t.Logf("new active node answers lease lookups %s after the kill", secs(elect+served))
	for _, c := range shorts {
		if time.Now().After(expiry[c.LeaseID]) {
			t.Fatalf("lease %s expired before the new active node was up; TTL too short for this machine", c.LeaseID)
		}
	}
	haLeaseCount(t, ctx, active, shortRole, 3)
	haLeaseCount(t, ctx, active, longRole, 1)
	standbys = h.Standbys(active)
	if len(standbys) != 1 {
		t.Fatalf("standbys after the kill: %d, want 1", len(standbys))
	}
	longs = append(longs, haReadCreds(t, ctx, h, standbys[0], longRole))
	if got := haIssuedBy(t, ctx, h, longs[1].CredentialID); len(got) != 1 || got[0] != active.NodeID {
		t.Fatalf("credential %s logged as issued by %v, want only the new active node %s", longs[1].CredentialID, got, active.NodeID)
	}
	t.Logf("creds through the remaining standby %s issued by the new active %s %s after the kill", standbys[0].NodeID, active.NodeID, secs(time.Since(killAt)))
	haSecretCount(t, ctx, longRole, 2)
	haLeaseCount(t, ctx, active, gapRole, 0)
	done()

	// (3) Expiry on the new active node's watch.
	done = step(t, "wait for the %d %s leases to expire and their Secrets to go", len(shorts), shortRole)
	names := map[string]string{} // Secret name -> lease id
	for _, c := range shorts {
		names[haBoundSecretName(t, c.Token)] = c.LeaseID
	}
	last := time.Time{}
	for _, e := range expiry {
		if e.After(last) {
			last = e
		}
	}
	goneAt := map[string]time.Time{}
	_, err = stack.Poll(ctx, time.Until(last)+60*time.Second, 250*time.Millisecond, func() (bool, error) {
		secs, err := st.HASecrets(ctx, shortRole)
		if err != nil {
			return false, err
		}
		present := map[string]bool{}
		for _, s := range secs {
			present[s.Name] = true
		}
		now := time.Now()
		for name := range names {
			if !present[name] {
				if _, seen := goneAt[name]; !seen {
					goneAt[name] = now
				}
			}
		}
		return len(secs) == 0, nil
	})
	if err != nil {
		t.Fatalf("%s Secrets not all gone 60 s after the last expiry: %v", shortRole, err)
	}
	var delays []time.Duration
	for name, lease := range names {
		d := goneAt[name].Sub(expiry[lease])
		delays = append(delays, d)
		t.Logf("lease %s expired %s after the kill; Secret %s gone %s after expiry", lease, secs(expiry[lease].Sub(killAt)), name, secs(d))
		if d < -time.Second {
			t.Errorf("Secret %s gone %s before its lease expired", name, secs(-d))
		}
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	t.Logf("RESULT vault-ha expired-lease revocation by the new active node: Secret gone %s..%s after expiry (%d leases)",
		secs(delays[0]), secs(delays[len(delays)-1]), len(delays))
	var tokens []string
	for _, c := range shorts {
		tokens = append(tokens, c.Token)
	}
	haWaitRejected(t, ctx, tokens, 15*time.Second)
	haLeaseCount(t, ctx, active, shortRole, 0)
	for _, c := range longs {
		if code := haTokenStatus(t, ctx, c.Token); code != http.StatusOK {
			t.Fatalf("long lease token: HTTP %d, want 200", code)
		}
	}
	haSecretCount(t, ctx, longRole, 2)
	done()

	// (4) Explicit revoke through the new active node.
	done = step(t, "vault lease revoke the %d %s leases through the new active node %s", len(longs), longRole, active.NodeID)
	start := time.Now()
	tokens = nil
	for _, c := range longs {
		res, err := active.CLI(ctx, "lease", "revoke", c.LeaseID)
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("vault lease revoke %s: %v %s", c.LeaseID, err, res)
		}
		t.Logf("vault lease revoke %s through %s returned after %s", c.LeaseID, active.NodeID, secs(res.Duration))
		tokens = append(tokens, c.Token)
	}
	haWaitSecretCount(t, ctx, longRole, 0, 15*time.Second)
	t.Logf("explicit revoke: %s Secrets gone %s after the first revoke", longRole, secs(time.Since(start)))
	haWaitRejected(t, ctx, tokens, 15*time.Second)
	t.Logf("explicit revoke: tokens rejected %s after the first revoke (the API server caches token reviews for up to 10 s)", secs(time.Since(start)))
	done()

	// (5) Nothing left.
	done = step(t, "no bound Secret and no lease left")
	haSecretCount(t, ctx, "", 0)
	haLeaseCount(t, ctx, active, shortRole, 0)
	haLeaseCount(t, ctx, active, longRole, 0)
	haLeaseCount(t, ctx, active, gapRole, 0)
	t.Logf("RESULT vault-ha: election %s after SIGKILL of the active node; 6 leases issued (1 through the new standby), 4 expired and 2 revoked by the new active node, 0 Secrets left", secs(elect))
	done()
}

// haCleanup revokes whatever the test left through the active node (if any),
// checks that no bound Secret remains in the HA namespace, stops all nodes
// and checks that their process groups are gone.
func haCleanup(t *testing.T, h *stack.VaultHA) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if active := h.Active(ctx); active != nil {
		if res, err := active.CLI(ctx, "lease", "revoke", "-prefix", stack.Mount+"/"); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: revoke -prefix through %s: %v %s", active.NodeID, err, res)
		}
	}
	var left int
	_, err := stack.Poll(ctx, 20*time.Second, 500*time.Millisecond, func() (bool, error) {
		secs, err := st.HASecrets(ctx, "")
		left = len(secs)
		return err == nil && left == 0, err
	})
	if err != nil {
		t.Errorf("cleanup: %d bound Secrets left in %s: %v", left, stack.HANamespace, err)
		if cs, cerr := st.Kube.AdminClient(); cerr == nil {
			secs, _ := st.HASecrets(ctx, "")
			for _, s := range secs {
				_ = cs.CoreV1().Secrets(stack.HANamespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
			}
		}
	}
	if t.Failed() {
		h.DumpLogs(t, 60)
	}
	h.Stop()
	if err := h.GroupsGone(); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if t.Failed() {
		t.Logf("vault-ha logs kept (with the stack directory): %s", strings.Join(h.LogFiles(), " "))
	}
}

func haReadCreds(t *testing.T, ctx context.Context, h *stack.VaultHA, node *stack.HANode, role string) *creds {
	t.Helper()
	c, err := node.Client()
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	sec, err := c.Logical().ReadWithContext(ctx, stack.Mount+"/creds/"+role)
	if err != nil {
		t.Fatalf("read %s/creds/%s through %s: %v", stack.Mount, role, node.NodeID, err)
	}
	return credsFromSecret(t, sec, issued)
}

// haIssuedBy returns the nodes whose log records issuing the credential
// (waiting up to 5 s for the plugin's log line to reach a Vault log); an
// unreadable log fails the test.
func haIssuedBy(t *testing.T, ctx context.Context, h *stack.VaultHA, credentialID string) []string {
	t.Helper()
	var out []string
	// A timeout just means no node logged it: the caller checks out.
	_, _ = stack.Poll(ctx, 5*time.Second, 100*time.Millisecond, func() (bool, error) {
		out = haLoggedIssue(t, h, credentialID)
		return len(out) > 0, nil
	})
	return out
}

func haLoggedIssue(t *testing.T, h *stack.VaultHA, credentialID string) []string {
	t.Helper()
	var out []string
	for _, n := range h.Nodes {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Fatalf("read the log of %s: %v", n.NodeID, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "issued credential") && strings.Contains(line, credentialID) {
				out = append(out, n.NodeID)
				break
			}
		}
	}
	return out
}

func haLookup(ctx context.Context, node *stack.HANode, leaseID string) (map[string]any, error) {
	c, err := node.Client()
	if err != nil {
		return nil, err
	}
	sec, err := c.Logical().WriteWithContext(ctx, "sys/leases/lookup", map[string]any{"lease_id": leaseID})
	if err != nil {
		return nil, err
	}
	if sec == nil {
		return nil, fmt.Errorf("lease %s: empty lookup", leaseID)
	}
	return sec.Data, nil
}

func haLeaseExpiry(t *testing.T, ctx context.Context, node *stack.HANode, leaseID string) time.Time {
	t.Helper()
	d, err := haLookup(ctx, node, leaseID)
	if err != nil {
		t.Fatalf("lease lookup %s: %v", leaseID, err)
	}
	s, _ := d["expire_time"].(string)
	e, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("lease %s expire_time %q: %v", leaseID, s, err)
	}
	return e
}

// haLeaseCount checks the number of leases under scanner/creds/<role>/.
func haLeaseCount(t *testing.T, ctx context.Context, node *stack.HANode, role string, want int) {
	t.Helper()
	c, err := node.Client()
	if err != nil {
		t.Fatal(err)
	}
	sec, err := c.Logical().ListWithContext(ctx, "sys/leases/lookup/"+stack.Mount+"/creds/"+role+"/")
	if err != nil {
		t.Fatalf("list leases of %s through %s: %v", role, node.NodeID, err)
	}
	got := 0
	if sec != nil { // nil: Vault's 404 for an empty list
		ks, ok := sec.Data["keys"].([]any)
		if !ok {
			t.Fatalf("list leases of %s through %s: no keys list in %v", role, node.NodeID, sec.Data)
		}
		got = len(ks)
	}
	if got != want {
		t.Fatalf("leases of %s: %d, want %d", role, got, want)
	}
}

func haSecretCount(t *testing.T, ctx context.Context, role string, want int) {
	t.Helper()
	secs, err := st.HASecrets(ctx, role)
	if err != nil {
		t.Fatalf("list bound Secrets: %v", err)
	}
	if len(secs) != want {
		t.Fatalf("bound Secrets in %s (role %q): %d, want %d", stack.HANamespace, role, len(secs), want)
	}
}

func haWaitSecretCount(t *testing.T, ctx context.Context, role string, want int, timeout time.Duration) {
	t.Helper()
	got := -1
	_, err := stack.Poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
		secs, err := st.HASecrets(ctx, role)
		got = len(secs)
		return err == nil && got == want, err
	})
	if err != nil {
		t.Fatalf("role %s: want %d bound Secrets, have %d: %v", role, want, got, err)
	}
}

func haTokenStatus(t *testing.T, ctx context.Context, token string) int {
	t.Helper()
	code, err := st.HATokenStatus(ctx, token)
	if err != nil {
		t.Fatalf("GET pods with token: %v", err)
	}
	return code
}

// haWaitRejected polls every token until the API server answers 401.
func haWaitRejected(t *testing.T, ctx context.Context, tokens []string, timeout time.Duration) {
	t.Helper()
	errs := make([]error, len(tokens))
	var wg sync.WaitGroup
	for i, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = stack.Poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
				code, err := st.HATokenStatus(ctx, tok)
				return code == http.StatusUnauthorized, err
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("token %d not rejected within %s: %v", i, timeout, err)
		}
	}
}

// haBoundSecretName returns the name of the Secret a token is bound to.
func haBoundSecretName(t *testing.T, token string) string {
	t.Helper()
	k, _ := jwtClaims(t, token)["kubernetes.io"].(map[string]any)
	s, _ := k["secret"].(map[string]any)
	name, _ := s["name"].(string)
	if name == "" {
		t.Fatalf("token not bound to a Secret: kubernetes.io claims %v", k)
	}
	return name
}
