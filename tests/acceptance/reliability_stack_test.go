package acceptance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// TestReliability runs the real-stack reliability scenarios that must not overlap
// with anything else (load, revoke storm, API server down, RBAC changes):
// it is not parallel, so Go runs it while every parallel test is paused.
// Its subtests run in order and each ends with assertInvariant.
func TestReliability(t *testing.T) {
	t.Run("HostileNames", testReliabilityHostileNames)
	t.Run("RevokeSecretAlreadyGone", testReliabilityRevokeSecretGone)
	t.Run("Tidy", testReliabilityTidy)
	t.Run("LoadAndRevokeStorm", testReliabilityLoadAndRevokeStorm)
	t.Run("APIServerDown", testReliabilityAPIServerDown)
	t.Run("GlobalInvariant", func(t *testing.T) {
		// Every role of the mount, not only this test's.
		sc := newScenario(t)
		list, err := vaultClient(t).Logical().ListWithContext(testCtx(t, time.Minute), stack.Mount+"/roles")
		if err != nil {
			t.Fatal(err)
		}
		if list != nil {
			for _, k := range list.Data["keys"].([]any) {
				sc.role(stack.Mount, str(k))
			}
		}
		counts, err := roleSecretCounts(testCtx(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		for r := range counts {
			sc.role(stack.Mount, r)
		}
		// The plugin's own credential never shows either: not in config
		// reads, path-help, nor (checked by assertInvariant) the logs.
		sc.token(st.TokenRequesterJWT)
		for _, args := range [][]string{
			{"read", "-format=json", stack.Mount + "/clusters/" + stack.ClusterName},
			{"path-help", stack.Mount + "/clusters/" + stack.ClusterName},
			{"path-help", stack.Mount + "/creds/" + stack.RoleName},
		} {
			res := mustVault(t, args...)
			sc.text(res.Stdout + res.Stderr)
		}
		assertInvariant(t, sc)
	})
}

// rawVault sends a request to Vault with the path exactly as given (no
// cleaning, no escaping) and returns the status and body.
func rawVaultAsIs(t *testing.T, method, path string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t, time.Minute), method, st.Vault.Addr+"/v1/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "/v1/" + path // sent as is: "..", "%2f" and all
	req.Header.Set("X-Vault-Token", st.Vault.RootToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func roleBody(sa, ns string) string {
	return fmt.Sprintf(`{"cluster":%q,"service_account_name":%q,"service_account_namespace":%q}`, stack.ClusterName, sa, ns)
}

// labelledObjects counts everything the plugin labels in the namespaces a
// hostile request could touch.
func labelledObjects(t *testing.T) int {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ns := range []string{stack.ScannerNamespace, "kube-system", "default", stack.RequesterNamespace} {
		secs, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: stack.ManagedByLabel})
		if err != nil {
			t.Fatal(err)
		}
		sas, err := cs.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{LabelSelector: stack.ManagedByLabel})
		if err != nil {
			t.Fatal(err)
		}
		n += len(secs.Items) + len(sas.Items)
	}
	return n
}

// Names: path traversal, upper case, 300-character names, unicode, and a
// service account in a namespace the token requester cannot reach: 400 or a
// clear error, nothing created (in Vault or Kubernetes).
func testReliabilityHostileNames(t *testing.T) {
	sc := newScenario(t)
	long := strings.Repeat("a", 300)
	before := labelledObjects(t)
	c := vaultClient(t)
	clusterBefore, err := c.Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+stack.ClusterName)
	if err != nil {
		t.Fatal(err)
	}
	roleList := func() []string {
		sec, err := c.Logical().ListWithContext(testCtx(t, time.Minute), stack.Mount+"/roles")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		if sec != nil {
			for _, k := range sec.Data["keys"].([]any) {
				out = append(out, str(k))
			}
		}
		return out
	}
	rolesBefore := roleList()

	cases := []struct {
		name, method, path, body string
		want                     []int  // acceptable statuses
		msg                      string // required in the error text
	}{
		{"traversal %2f in role name", "POST", stack.Mount + "/roles/..%2f..", roleBody(stack.ScannerSA, stack.ScannerNamespace), []int{400, 404, 405}, ""},
		{"traversal %2F to clusters/", "POST", stack.Mount + "/roles/..%2F..%2Fclusters%2F" + stack.ClusterName, roleBody(stack.ScannerSA, stack.ScannerNamespace), []int{400, 404, 405}, ""},
		{"raw ../ to clusters/", "POST", stack.Mount + "/roles/../clusters/" + stack.ClusterName, roleBody(stack.ScannerSA, stack.ScannerNamespace), []int{400, 404, 405}, ""},
		{"traversal in creds", "GET", stack.Mount + "/creds/..%2f..%2fclusters%2f" + stack.ClusterName, "", []int{400, 404, 405}, ""},
		// Vault cleans ".." out of the path before routing (and before ACL
		// checks): this is a plain read of roles/cluster-a, no credential.
		{"raw ../ in creds", "GET", stack.Mount + "/creds/../roles/" + stack.RoleName, "", []int{200, 400, 404, 405}, ""},
		{"upper-case service account", "POST", stack.Mount + "/roles/reliab-hostile", roleBody("Scanner-SA", stack.ScannerNamespace), []int{400}, "not a valid Kubernetes service account name"},
		{"upper-case namespace", "POST", stack.Mount + "/roles/reliab-hostile", roleBody(stack.ScannerSA, "Scanner-Namespace"), []int{400}, "namespace"},
		{"300-char service account", "POST", stack.Mount + "/roles/reliab-hostile", roleBody(long, stack.ScannerNamespace), []int{400}, "no more than 253 characters"},
		{"300-char namespace", "POST", stack.Mount + "/roles/reliab-hostile", roleBody(stack.ScannerSA, long), []int{400}, "namespace"},
		{"300-char role name", "POST", stack.Mount + "/roles/" + long, roleBody(stack.ScannerSA, stack.ScannerNamespace), []int{400}, "at most 128"},
		{"300-char creds role", "GET", stack.Mount + "/creds/" + long, "", []int{400, 404}, ""},
		{"unicode service account", "POST", stack.Mount + "/roles/reliab-hostile", roleBody("scänner-sa", stack.ScannerNamespace), []int{400}, "not a valid Kubernetes service account name"},
		{"unicode namespace", "POST", stack.Mount + "/roles/reliab-hostile", roleBody(stack.ScannerSA, "scänner-namespace"), []int{400}, "namespace"},
		{"unicode role name", "POST", stack.Mount + "/roles/r%C3%B4le", roleBody(stack.ScannerSA, stack.ScannerNamespace), []int{400}, "invalid"},
		{"RTL/zero-width role name", "POST", stack.Mount + "/roles/a%E2%80%8Bb%E2%80%AE", roleBody(stack.ScannerSA, stack.ScannerNamespace), []int{400}, ""},
		{"NUL in service account", "POST", stack.Mount + "/roles/reliab-hostile", `{"cluster":"cluster-a","service_account_name":"scanner-sa\u0000x","service_account_namespace":"scanner-namespace"}`, []int{400}, ""},
		{"unknown cluster traversal", "POST", stack.Mount + "/roles/reliab-hostile", `{"cluster":"../clusters/cluster-a","service_account_name":"scanner-sa","service_account_namespace":"scanner-namespace"}`, []int{400}, ""},
	}
	for _, tc := range cases {
		code, body := rawVaultAsIs(t, tc.method, tc.path, tc.body)
		sc.text(body)
		short := strings.TrimSpace(body)
		if len(short) > 160 {
			short = short[:160] + "..."
		}
		if !slices.Contains(tc.want, code) {
			t.Errorf("%s: %s %s: HTTP %d, want one of %v: %s", tc.name, tc.method, tc.path, code, tc.want, short)
			continue
		}
		if strings.Contains(body, "service_account_token") || strings.Contains(body, `"lease_id":"`+stack.Mount) {
			t.Errorf("%s: a credential was issued: %s", tc.name, short)
		}
		if tc.msg != "" && !strings.Contains(body, tc.msg) {
			t.Errorf("%s: error %q does not say %q", tc.name, short, tc.msg)
		}
		t.Logf("%-28s → HTTP %d %s", tc.name, code, short)
	}

	// A service account in a namespace the token requester cannot reach:
	// the role is accepted (the plugin cannot know the RBAC at write), creds
	// fail with a clear error before anything is created.
	mustVault(t, "write", stack.Mount+"/roles/reliab-kube-system", "cluster="+stack.ClusterName,
		"service_account_name=default", "service_account_namespace=kube-system")
	t.Cleanup(func() { vaultCLI(t, "delete", stack.Mount+"/roles/reliab-kube-system") })
	sc.role(stack.Mount, "reliab-kube-system")
	start := time.Now()
	code, body := rawVaultAsIs(t, "GET", stack.Mount+"/creds/reliab-kube-system", "")
	sc.text(body)
	if code < 400 || !strings.Contains(body, `may not delete secrets in namespace \"kube-system\"`) {
		t.Errorf("creds in kube-system: HTTP %d %s, want an error naming the missing right", code, body)
	}
	t.Logf("%-28s → HTTP %d after %s: %s", "unreachable namespace", code, secs(time.Since(start)), strings.TrimSpace(body))
	figure(t, "kube-system creds: HTTP %d in %s, error names the missing 'delete secrets' right", code, secs(time.Since(start)))

	// Upper case in a Vault role name is allowed (Vault paths are case
	// sensitive; the name only goes into an annotation) and works.
	writeRole(t, "RELIAB-Upper", "ttl=5m")
	sc.role(stack.Mount, "RELIAB-Upper")
	up := issueOne(t, sc, stack.Mount, "RELIAB-Upper", nil)
	if n := secretCount(t, "RELIAB-Upper"); n != 1 {
		t.Errorf("upper-case role: %d bound Secrets, want 1", n)
	}
	mustVault(t, "lease", "revoke", "-sync", up.LeaseID)
	waitSecretCount(t, "RELIAB-Upper", 0, 10*time.Second)

	if after := labelledObjects(t); after != before {
		t.Errorf("hostile requests changed the number of labelled objects: %d → %d", before, after)
	}
	wantRoles := append(slices.Clone(rolesBefore), "RELIAB-Upper", "reliab-kube-system")
	slices.Sort(wantRoles)
	gotRoles := roleList()
	slices.Sort(gotRoles)
	if !slices.Equal(gotRoles, wantRoles) {
		t.Errorf("roles after hostile requests: %v, want %v (the roles before plus RELIAB-Upper and reliab-kube-system)", gotRoles, wantRoles)
	}
	clusterAfter, err := c.Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+stack.ClusterName)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(clusterAfter.Data) != fmt.Sprint(clusterBefore.Data) {
		t.Errorf("clusters/%s changed: %v → %v", stack.ClusterName, clusterBefore.Data, clusterAfter.Data)
	}
	figure(t, "%d hostile requests refused (400/404/405; a raw ../ is cleaned by Vault to another path), 0 credentials, 0 objects created, roles and cluster unchanged", len(cases))
	assertInvariant(t, sc)
}

// Revoke when the Secret is already gone: deleting the bound Secret by hand
// and then revoking succeeds and ends the lease.
func testReliabilityRevokeSecretGone(t *testing.T) {
	const role = "reliab-gone"
	sc := newScenario(t, role)
	writeRole(t, role, "ttl=5m")
	c := issueOne(t, sc, stack.Mount, role, nil)
	secs0, err := st.ManagedSecrets(testCtx(t, time.Minute), role)
	if err != nil || len(secs0) != 1 {
		t.Fatalf("bound Secrets of %s: %d (%v), want 1", role, len(secs0), err)
	}
	res, err := st.KubectlAdmin(testCtx(t, time.Minute), "delete", "secret", "-n", stack.ScannerNamespace, secs0[0].Name)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl delete secret: %v %s", err, res)
	}
	start := time.Now()
	res = vaultCLI(t, "lease", "revoke", "-sync", c.LeaseID)
	sc.text(res.Stderr)
	if res.ExitCode != 0 {
		t.Fatalf("vault lease revoke -sync after the Secret was deleted: %s", res)
	}
	leases, err := listLeases(testCtx(t, time.Minute), vaultClient(t), stack.Mount, role)
	if err != nil || len(leases) != 0 {
		t.Fatalf("leases of %s after revoke: %v (%v), want none", role, leases, err)
	}
	took := waitTokenStatus(t, c.Token, http.StatusUnauthorized, 15*time.Second, start)
	figure(t, "revoke -sync succeeded in %s with the Secret already deleted; lease gone; token 401 after %s", secs(res.Duration), secs(took))
	assertInvariant(t, sc)
}

// tidy deletes expired bound Secrets no lease owns (left by `vault lease
// revoke -force` while the plugin could not delete them) and leaves live
// ones.
func testReliabilityTidy(t *testing.T) {
	const role = "reliab-tidy"
	sc := newScenario(t, role)
	writeRole(t, role, "ttl=5m")
	orig := requesterRules(t)

	// Without `list` on secrets (the shipped least-privilege Role), tidy
	// reports the Secrets of this namespace as skipped and deletes nothing.
	sec, err := vaultClient(t).Logical().WriteWithContext(testCtx(t, time.Minute), stack.Mount+"/tidy", map[string]any{"grace": "0s"})
	if err != nil {
		t.Fatalf("tidy without list on secrets: %v, want skipped lists", err)
	}
	sc.text(fmt.Sprint(sec.Data, sec.Warnings))
	skipped := fmt.Sprint(sec.Data["skipped"])
	if !strings.Contains(skipped, `secrets in namespace "`+stack.ScannerNamespace+`"`) || fmt.Sprint(sec.Data["deleted"]) != "0" {
		t.Errorf("tidy without list: deleted %v, skipped %s; want 0 and the Secrets of %s skipped", sec.Data["deleted"], skipped, stack.ScannerNamespace)
	}
	t.Logf("tidy without list on secrets: skipped %s", skipped)

	live1 := issueOne(t, sc, stack.Mount, role, nil)
	live2 := issueOne(t, sc, stack.Mount, role, nil)
	victim := issueOne(t, sc, stack.Mount, role, url.Values{"ttl": {"10s"}})
	victimIssued := victim.Issued
	all, err := st.ManagedSecrets(testCtx(t, time.Minute), role)
	if err != nil || len(all) != 3 {
		t.Fatalf("bound Secrets of %s: %d (%v), want 3", role, len(all), err)
	}
	victimSecret := ""
	for _, s := range all {
		if s.Annotations["vault-plugin-scanner/expires-at"] == victim.ExpiresAt {
			victimSecret = s.Name
		}
	}
	if victimSecret == "" {
		t.Fatalf("no bound Secret with expires-at %s", victim.ExpiresAt)
	}

	// Take away `delete` on secrets (add `list` for tidy): the forced
	// revoke then fails in the plugin, and Vault drops the lease anyway.
	var noDelete []rbacv1.PolicyRule
	for _, r := range orig {
		r = *r.DeepCopy()
		if slices.Contains(r.Resources, "secrets") {
			r.Verbs = []string{"create", "list"}
		}
		noDelete = append(noDelete, r)
	}
	changeRequesterRules(t, noDelete)
	time.Sleep(2 * time.Second) // RBAC authorizer cache
	res := vaultCLI(t, "lease", "revoke", "-force", "-prefix", victim.LeaseID)
	sc.text(res.Stdout + res.Stderr)
	if res.ExitCode != 0 {
		t.Fatalf("vault lease revoke -force -prefix: %s", res)
	}
	leases, err := listLeases(testCtx(t, time.Minute), vaultClient(t), stack.Mount, role)
	if err != nil || len(leases) != 2 || slices.Contains(leases, victim.LeaseID) {
		t.Fatalf("leases after revoke -force: %v (%v), want the 2 live ones", leases, err)
	}
	if n := secretCount(t, role); n != 3 {
		t.Fatalf("bound Secrets after revoke -force without delete right: %d, want 3 (one orphaned)", n)
	}

	// Give delete back, keep list; wait until the orphan's expires-at passed.
	withList := slices.Clone(orig)
	for i, r := range withList {
		r = *r.DeepCopy()
		if slices.Contains(r.Resources, "secrets") && !slices.Contains(r.Verbs, "list") {
			r.Verbs = append(r.Verbs, "list")
		}
		withList[i] = r
	}
	changeRequesterRules(t, withList)
	if wait := time.Until(victimIssued.Add(12 * time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	time.Sleep(2 * time.Second) // RBAC authorizer cache
	start := time.Now()
	sec, err = vaultClient(t).Logical().WriteWithContext(testCtx(t, time.Minute), stack.Mount+"/tidy", map[string]any{"grace": "0s"})
	if err != nil {
		sc.text(err.Error())
		t.Fatalf("tidy grace=0s: %v", err)
	}
	took := time.Since(start)
	if d := fmt.Sprint(sec.Data["deleted"]); d != "1" {
		t.Errorf("tidy deleted %s, want 1", d)
	}
	left, err := st.ManagedSecrets(testCtx(t, time.Minute), role)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || slices.ContainsFunc(left, func(s corev1.Secret) bool { return s.Name == victimSecret }) {
		t.Fatalf("after tidy: %d Secrets of %s (orphan %s present: %v), want the 2 live ones", len(left), role, victimSecret,
			slices.ContainsFunc(left, func(s corev1.Secret) bool { return s.Name == victimSecret }))
	}
	for _, lc := range []*creds{live1, live2} {
		if code := tokenStatus(t, lc.Token); code != http.StatusOK {
			t.Errorf("live token after tidy: HTTP %d, want 200", code)
		}
	}
	if code := tokenStatus(t, victim.Token); code != http.StatusUnauthorized {
		// The token also expired by Kubernetes' bound-object rule once its
		// Secret is gone (after the 10 s authentication cache).
		waitTokenStatus(t, victim.Token, http.StatusUnauthorized, 15*time.Second, start)
	}
	figure(t, "tidy grace=0s deleted 1 orphaned expired Secret in %s, kept 2 live (tokens still 200); without list: skipped", secs(took))
	assertInvariant(t, sc)
}

// Load: 32 clients × 50 creds over Vault's HTTP API, then revoke-prefix
// over all of them.
func testReliabilityLoadAndRevokeStorm(t *testing.T) {
	const (
		role    = "reliab-load"
		clients = 32
		each    = 50
		total   = clients * each
	)
	sc := newScenario(t, role)
	writeRole(t, role, "ttl=15m")
	prefix := stack.Mount + "/creds/" + role
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = st.Vault.CLI(ctx, "lease", "revoke", "-prefix", prefix)
	})

	type result struct {
		lease, token string
		err          error
		took         time.Duration
	}
	results := make([]result, total)
	done := step(t, "%d clients × %d GET %s?ttl=5m", clients, each, prefix)
	start := time.Now()
	var wg sync.WaitGroup
	for ci := 0; ci < clients; ci++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vc, err := st.Vault.Client()
			if err != nil {
				for j := 0; j < each; j++ {
					results[ci*each+j].err = err
				}
				return
			}
			ctx := context.Background()
			for j := 0; j < each; j++ {
				r := &results[ci*each+j]
				t0 := time.Now()
				rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				s, err := vc.Logical().ReadWithDataWithContext(rctx, prefix, url.Values{"ttl": {"5m"}})
				cancel()
				r.took = time.Since(t0)
				if err != nil {
					r.err = err
					continue
				}
				if s == nil || s.LeaseID == "" {
					r.err = fmt.Errorf("no lease in response")
					continue
				}
				r.lease = s.LeaseID
				r.token = str(s.Data["service_account_token"])
				for _, w := range s.Warnings {
					r.err = fmt.Errorf("warning: %s", w)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	done()

	seen := map[string]bool{}
	var tokens []string
	errs := 0
	var lat []time.Duration
	for i, r := range results {
		if r.err != nil {
			errs++
			sc.text(r.err.Error())
			if errs <= 5 {
				t.Errorf("request %d: %v", i, r.err)
			}
			continue
		}
		if seen[r.lease] {
			t.Errorf("lease id %s returned twice", r.lease)
		}
		seen[r.lease] = true
		tokens = append(tokens, r.token)
		sc.token(r.token)
		lat = append(lat, r.took)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(float64(len(lat)-1)*p)].Round(time.Millisecond)
	}
	rate := float64(len(seen)) / elapsed.Seconds()
	t.Logf("load: %d creds, %d distinct leases, %d errors in %s = %.1f creds/s; latency p50 %s p95 %s p99 %s max %s",
		total, len(seen), errs, secs(elapsed), rate, pct(.5), pct(.95), pct(.99), pct(1))
	if errs != 0 || len(seen) != total {
		t.Fatalf("load: %d errors, %d distinct leases, want 0 and %d", errs, len(seen), total)
	}
	ctx := testCtx(t, 5*time.Minute)
	leases, err := listLeases(ctx, vaultClient(t), stack.Mount, role)
	if err != nil {
		t.Fatal(err)
	}
	if n := secretCount(t, role); n != total || len(leases) != total {
		t.Fatalf("after load: %d bound Secrets, %d leases, want %d each", n, len(leases), total)
	}
	figure(t, "load %d×%d: %d distinct leases, %d Secrets, 0 errors in %s = %.1f creds/s (p50 %s, p95 %s, max %s)",
		clients, each, total, total, secs(elapsed), rate, pct(.5), pct(.95), pct(1))
	assertInvariant(t, sc)

	// Revoke storm.
	done = step(t, "PUT sys/leases/revoke-prefix/%s over %d leases", prefix, total)
	start = time.Now()
	if _, err := vaultClient(t).Logical().WriteWithContext(ctx, "sys/leases/revoke-prefix/"+prefix, nil); err != nil {
		sc.text(err.Error())
		t.Fatalf("revoke-prefix: %v", err)
	}
	returned := time.Since(start)
	sample := make([]string, 0, 20)
	for i := 0; i < 20; i++ {
		sample = append(sample, tokens[i*len(tokens)/20])
	}
	var rejected []time.Duration
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		rejected = waitAllRejected(t, sample, returned+15*time.Second, start)
	}()
	var left int
	_, err = stack.Poll(ctx, 3*time.Minute, 500*time.Millisecond, func() (bool, error) {
		left = secretCount(t, role)
		return left == 0, nil
	})
	secretsGone := time.Since(start)
	if err != nil {
		t.Fatalf("revoke storm: %d bound Secrets left: %v", left, err)
	}
	leases, err = listLeases(ctx, vaultClient(t), stack.Mount, role)
	if err != nil || len(leases) != 0 {
		t.Fatalf("revoke storm: %d leases left (%v)", len(leases), err)
	}
	n, err := irrevocableCount(ctx, vaultClient(t))
	if err != nil || n != 0 {
		t.Fatalf("irrevocable leases: %d (%v), want 0", n, err)
	}
	rwg.Wait()
	maxRej := slices.Max(rejected)
	done()

	// Every token, not just the sample, must be rejected once the revoke
	// has returned and Kubernetes' 10 s authentication cache has passed.
	if wait := time.Until(start.Add(returned + 15*time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	accepted := allTokensStatus(t, tokens)
	if accepted != 0 {
		t.Fatalf("%d of %d tokens still accepted 15 s after revoke-prefix returned", accepted, len(tokens))
	}
	figure(t, "revoke storm: revoke-prefix returned in %s (%.1f revocations/s), 0 of %d Secrets left after %s, 0 leases, 0 irrevocable; sample of 20 tokens 401 within %s of the start; all %d tokens 401 15 s after the return",
		secs(returned), float64(total)/returned.Seconds(), total, secs(secretsGone), secs(maxRej), total)
	assertInvariant(t, sc)
}

// allTokensStatus checks every token against the API server (16 at a time)
// and returns how many are still accepted.
func allTokensStatus(t *testing.T, tokens []string) int {
	t.Helper()
	ctx := testCtx(t, 5*time.Minute)
	var mu sync.Mutex
	accepted := 0
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, tok := range tokens {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			code, err := st.TokenStatus(ctx, tok)
			if err != nil || code != http.StatusUnauthorized {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return accepted
}

// API server down: issue fails fast with a clear error and creates
// nothing; a lease revoked while it is down is retried by Vault and ends
// clean once it is back.
func testReliabilityAPIServerDown(t *testing.T) {
	const role = "reliab-down"
	sc := newScenario(t, role)
	writeRole(t, role, "ttl=5m")
	c := issueOne(t, sc, stack.Mount, role, nil)
	bound, err := st.ManagedSecrets(testCtx(t, time.Minute), role)
	if err != nil || len(bound) != 1 {
		t.Fatalf("bound Secrets: %d (%v), want 1", len(bound), err)
	}
	ctx := testCtx(t, 10*time.Minute)
	t.Cleanup(func() {
		if exited, _ := st.Kube.Proc.Exited(); exited {
			if _, err := st.Kube.StartAPIServer(context.Background()); err != nil {
				t.Errorf("restarting kube-apiserver in cleanup: %v", err)
			}
		}
	})
	logOffset := fileSize(t, st.Vault.LogPath)

	done := step(t, "stop kube-apiserver")
	if err := st.Kube.StopAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	done()

	done = step(t, "issue while the API server is down")
	start := time.Now()
	_, err = vaultClient(t).Logical().ReadWithContext(ctx, stack.Mount+"/creds/"+role)
	failTook := time.Since(start)
	if err == nil {
		t.Fatalf("creds with the API server down succeeded")
	}
	sc.text(err.Error())
	t.Logf("creds failed after %s: %s", secs(failTook), err)
	if failTook > 20*time.Second {
		t.Errorf("creds took %s to fail, want < 20 s", secs(failTook))
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error does not say the API server is unreachable: %v", err)
	}
	done()

	done = step(t, "vault lease revoke %s while the API server is down", c.LeaseID)
	revokeStart := time.Now()
	res := vaultCLI(t, "lease", "revoke", c.LeaseID)
	sc.text(res.Stdout + res.Stderr)
	if res.ExitCode != 0 {
		t.Fatalf("vault lease revoke (queued): %s", res)
	}
	// Vault's revocation job fails and is retried with backoff.
	_, err = stack.Poll(ctx, 30*time.Second, 500*time.Millisecond, func() (bool, error) {
		return strings.Contains(readFrom(t, st.Vault.LogPath, logOffset), "failed to revoke lease"), nil
	})
	if err != nil {
		t.Fatalf("no failed revoke attempt in Vault's log: %v", err)
	}
	failLine := grepLine(readFrom(t, st.Vault.LogPath, logOffset), "failed to revoke lease")
	sc.text(failLine)
	t.Logf("Vault: %s", failLine)
	leases, err := listLeases(ctx, vaultClient(t), stack.Mount, role)
	if err != nil || len(leases) != 1 {
		t.Fatalf("lease while its revoke fails: %v (%v), want it still listed", leases, err)
	}
	done()

	done = step(t, "start kube-apiserver again")
	ready, err := st.Kube.StartAPIServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	t.Logf("kube-apiserver was down %s; ready %s after start", secs(up.Sub(down)), secs(ready))
	left, err := st.ManagedSecrets(ctx, role)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range left {
		if s.Name != bound[0].Name {
			t.Errorf("a bound Secret %s appeared from the failed issue", s.Name)
		}
	}
	done()

	done = step(t, "wait for Vault's retry to revoke the lease")
	_, err = stack.Poll(ctx, 5*time.Minute, time.Second, func() (bool, error) {
		l, err := listLeases(ctx, vaultClient(t), stack.Mount, role)
		if err != nil {
			return false, err
		}
		return len(l) == 0 && secretCount(t, role) == 0, nil
	})
	if err != nil {
		t.Fatalf("lease not revoked after the API server came back: %v", err)
	}
	clean := time.Since(up)
	done()
	waitTokenStatus(t, c.Token, http.StatusUnauthorized, 15*time.Second, time.Now())
	n, err := irrevocableCount(ctx, vaultClient(t))
	if err != nil || n != 0 {
		t.Fatalf("irrevocable leases: %d (%v)", n, err)
	}
	figure(t, "API server down: creds failed in %s (connection refused, 0 Secrets made); revoke queued, failed, retried; lease and Secret gone %s after the API server was ready (down %s, revoke issued %s before ready)",
		secs(failTook), secs(clean), secs(up.Sub(down)), secs(up.Sub(revokeStart)))
	assertInvariant(t, sc)
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return fi.Size()
}

// readFrom returns the file's content from offset off on.
func readFrom(t *testing.T, p string, off int64) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	if int64(len(b)) < off {
		t.Fatalf("%s is shorter (%d bytes) than offset %d: truncated?", p, len(b), off)
	}
	return string(b[off:])
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
