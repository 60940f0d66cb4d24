package acceptance

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Trust invariants: a stored credential only goes to the endpoint it was
// written for; a revoke reported as done means the token is dead, whatever
// happened to the role or cluster entry since the issue; creds errors say
// by their status whether retrying can help, and never carry a JWT.

// TestTrustStoredJWTStaysWithItsEndpoint: changing where or how the plugin
// connects (kubernetes_host, kubernetes_ca_cert, tls_server_name,
// proxy_url; alone, together, or spread over two writes) without sending
// service_account_jwt in the same write is refused with 400 and changes
// nothing; a TLS listener that records every request (and MITMs CONNECT
// tunnels for clients that trust its CA) never sees the stored JWT; the
// entry keeps working against the real cluster. Re-sending the JWT with
// the change is accepted, and then the listener does see it (the control
// that shows it would have caught a leak).
func TestTrustStoredJWTStaysWithItsEndpoint(t *testing.T) {
	t.Parallel()
	const name = "trust-proxy"
	path := stack.Mount + "/clusters/" + name
	jwt := st.TokenRequesterJWT
	rec := newRecordingListener(t)
	recCA := rec.caPEM()

	done := step(t, "clusters/%s on the first cluster; role %s", name, name)
	cleanupLeftovers(t, stack.Mount+"/creds/"+name, name, st.First)
	writeClusterEntry(t, name, clusterArgs(st.First)...)
	writeRoleOnCluster(t, name, name, "ttl=5m")
	before := readClusterEntry(t, name)
	restore := func() {
		t.Helper()
		mustVault(t, append([]string{"write", path, "tls_server_name=", "proxy_url="}, clusterArgs(st.First)...)...)
	}
	done()

	cases := []struct {
		name   string
		writes []map[string]any
	}{
		{"kubernetes_host alone", []map[string]any{{"kubernetes_host": rec.URL()}}},
		{"kubernetes_ca_cert alone", []map[string]any{{"kubernetes_ca_cert": recCA}}},
		{"tls_server_name alone", []map[string]any{{"tls_server_name": "localhost"}}},
		{"proxy_url alone", []map[string]any{{"proxy_url": rec.URL()}}},
		{"kubernetes_host and kubernetes_ca_cert in one write", []map[string]any{{"kubernetes_host": rec.URL(), "kubernetes_ca_cert": recCA}}},
		{"kubernetes_ca_cert, then proxy_url in a second write", []map[string]any{{"kubernetes_ca_cert": recCA}, {"proxy_url": rec.URL()}}},
	}
	for _, tc := range cases {
		done := step(t, "without service_account_jwt: %s", tc.name)
		for i, w := range tc.writes {
			code, vr := rawVault(t, http.MethodPost, path, w)
			errText := strings.Join(vr.Errors, "; ")
			assertNoJWTIn(t, "the error of "+tc.name, errText, jwt)
			if code != http.StatusBadRequest {
				t.Errorf("%s: write %d of %d (%s): HTTP %d, want 400 (%s)", tc.name, i+1, len(tc.writes), fieldNames(w), code, errText)
			} else {
				t.Logf("write %d (%s): HTTP 400: %s", i+1, fieldNames(w), errText)
			}
		}
		after := readClusterEntry(t, name)
		changed := !reflect.DeepEqual(after, before)
		if changed {
			t.Errorf("%s: the stored entry changed: %s", tc.name, entryDiff(before, after))
		}
		// Whatever is stored now is what the plugin uses: a check sends
		// the stored JWT there.
		code, vr := rawVault(t, http.MethodGet, path+"/check", nil)
		assertNoJWTIn(t, "clusters/"+name+"/check", fmt.Sprint(vr.Data, vr.Errors), jwt)
		if leaked := rec.carrying(jwt); len(leaked) > 0 {
			t.Errorf("LEAK: after %s, the recording listener got %d requests carrying the stored JWT (first: %s %s%s, tunnelled %v)",
				tc.name, len(leaked), leaked[0].Method, leaked[0].Host, leaked[0].Path, leaked[0].Tunnelled)
		}
		if changed {
			t.Logf("check after the accepted change: HTTP %d; restoring the entry", code)
			restore()
		}
		done()
	}

	done = step(t, "clusters/%s/check and creds still work against the first cluster", name)
	res := mustVault(t, "read", "-format=json", path+"/check")
	if !strings.Contains(res.Stdout, `"ok": true`) {
		t.Errorf("check after the refused writes: want ok true:\n%s", res.Stdout)
	}
	sec := vaultReadCreds(t, stack.Mount+"/creds/"+name)
	if sec.Data["kubernetes_host"] != st.Kube.URL {
		t.Errorf("creds kubernetes_host %q, want the first cluster %s", sec.Data["kubernetes_host"], st.Kube.URL)
	}
	if code := statusOn(t, st.First, sec.Data["service_account_token"]); code != http.StatusOK {
		t.Errorf("the credential on the first cluster: HTTP %d, want 200", code)
	}
	start := time.Now()
	mustVault(t, "lease", "revoke", "-sync", sec.LeaseID)
	waitStatusOn(t, st.First, sec.Data["service_account_token"], http.StatusUnauthorized, 15*time.Second, start)
	if n := len(rec.carrying(jwt)); n > 0 {
		t.Errorf("LEAK: so far the recording listener got %d requests carrying the stored JWT", n)
	} else {
		t.Logf("recording listener: %d requests so far, none carrying the stored JWT", len(rec.requests()))
	}
	done()

	done = step(t, "proxy_url (and CA) of the listener WITH service_account_jwt re-sent: accepted")
	code, vr := rawVault(t, http.MethodPost, path, map[string]any{
		"proxy_url": rec.URL(), "kubernetes_ca_cert": recCA, "service_account_jwt": jwt})
	if code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("write with the JWT re-sent: HTTP %d, want 200 or 204: %v", code, vr.Errors)
	}
	got := readClusterEntry(t, name)
	if got["proxy_url"] != rec.URL() {
		t.Errorf("proxy_url after the accepted write: %v, want %s", got["proxy_url"], rec.URL())
	}
	rawVault(t, http.MethodGet, path+"/check", nil)
	if n := len(rec.carrying(jwt)); n == 0 {
		t.Errorf("control: after the operator re-sent the JWT with the listener as proxy, the listener saw no request carrying it (%d requests): the leak checks above prove nothing", len(rec.requests()))
	} else {
		t.Logf("control: the listener now sees the JWT (%d requests): it would have caught a leak", n)
	}
	done()
}

// TestTrustRepointKeepsRevokeOnTheIssuer: a lease issued from the first
// cluster is still revoked there (Secret deleted, token 401) after the
// clusters/ entry was re-pointed at the second cluster, and a lease issued
// after the re-point lives on the second cluster only.
func TestTrustRepointKeepsRevokeOnTheIssuer(t *testing.T) {
	t.Parallel()
	const name = "trust-repoint"
	second := secondCluster(t)
	cleanupLeftovers(t, stack.Mount+"/creds/"+name, name, st.First, second)

	done := step(t, "clusters/%s on the first cluster; issue L1", name)
	writeClusterEntry(t, name, clusterArgs(st.First)...)
	writeRoleOnCluster(t, name, name, "ttl=10m")
	l1 := vaultReadCreds(t, stack.Mount+"/creds/"+name)
	tok1 := l1.Data["service_account_token"]
	kubeconfigWorks(t, l1, st.First)
	if n := clusterSecrets(t, st.First, name); len(n) != 1 {
		t.Fatalf("first cluster: bound Secrets of clusters/%s: %v, want 1", name, n)
	}
	l1Secret := clusterSecrets(t, st.First, name)[0]
	done()

	done = step(t, "re-point clusters/%s at the second cluster (host, CA and its JWT); issue L2", name)
	mustVault(t, append([]string{"write", stack.Mount + "/clusters/" + name}, clusterArgs(second)...)...)
	l2 := vaultReadCreds(t, stack.Mount+"/creds/"+name)
	tok2 := l2.Data["service_account_token"]
	if l2.Data["kubernetes_host"] != second.URL() {
		t.Errorf("L2 kubernetes_host %q, want the second cluster %s", l2.Data["kubernetes_host"], second.URL())
	}
	kubeconfigWorks(t, l2, second)
	// Independent PKI: neither cluster accepts the other's token.
	if code := statusOn(t, st.First, tok2); code != http.StatusUnauthorized {
		t.Errorf("L2 on the first cluster: HTTP %d, want 401", code)
	}
	if code := statusOn(t, second, tok1); code != http.StatusUnauthorized {
		t.Errorf("L1 on the second cluster: HTTP %d, want 401", code)
	}
	if n := clusterSecrets(t, second, name); len(n) != 1 {
		t.Errorf("second cluster: bound Secrets of clusters/%s: %v, want 1", name, n)
	}
	done()

	done = step(t, "vault lease revoke -sync L1: 401 on the first cluster within 15 s, Secret %s gone there", l1Secret)
	start := time.Now()
	res := vaultCLI(t, "lease", "revoke", "-sync", l1.LeaseID)
	assertNoJWTIn(t, "revoke output", res.Stdout+res.Stderr, st.TokenRequesterJWT, second.TokenRequesterJWT)
	if res.ExitCode != 0 {
		t.Fatalf("vault lease revoke -sync L1 after the re-point: %s", res)
	}
	took := waitStatusOn(t, st.First, tok1, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("L1 rejected by the first cluster %s after the revoke", secs(took))
	waitClusterSecrets(t, st.First, name, 0, 5*time.Second)
	if code := statusOn(t, second, tok2); code != http.StatusOK {
		t.Fatalf("L2 after L1's revoke: HTTP %d on the second cluster, want 200", code)
	}
	if n := clusterSecrets(t, second, name); len(n) != 1 {
		t.Errorf("second cluster: bound Secrets of clusters/%s after L1's revoke: %v, want L2's only", name, n)
	}
	done()

	done = step(t, "vault lease revoke -sync L2: 401 on the second cluster within 15 s")
	start = time.Now()
	mustVault(t, "lease", "revoke", "-sync", l2.LeaseID)
	took = waitStatusOn(t, second, tok2, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("L2 rejected by the second cluster %s after the revoke", secs(took))
	waitClusterSecrets(t, second, name, 0, 5*time.Second)
	done()
}

// TestTrustRevokeAfterRoleAndClusterDeleted: once the role and then the
// cluster entry are deleted, revoking a lease (by id, and by prefix) still
// succeeds only by killing the token: 401 within 15 s, Secret gone.
func TestTrustRevokeAfterRoleAndClusterDeleted(t *testing.T) {
	t.Parallel()
	const name = "trust-delete"
	prefix := stack.Mount + "/creds/" + name
	cleanupLeftovers(t, prefix, name, st.First)

	done := step(t, "clusters/%s and role %s on the first cluster; issue two leases", name, name)
	writeClusterEntry(t, name, clusterArgs(st.First)...)
	writeRoleOnCluster(t, name, name, "ttl=10m")
	l1 := vaultReadCreds(t, prefix)
	l2 := vaultReadCreds(t, prefix)
	for _, l := range []stack.CLISecret{l1, l2} {
		if code := statusOn(t, st.First, l.Data["service_account_token"]); code != http.StatusOK {
			t.Fatalf("fresh token: HTTP %d, want 200", code)
		}
	}
	if n := clusterSecrets(t, st.First, name); len(n) != 2 {
		t.Fatalf("bound Secrets of clusters/%s: %v, want 2", name, n)
	}
	done()

	done = step(t, "vault delete roles/%s, then clusters/%s", name, name)
	mustVault(t, "delete", stack.Mount+"/roles/"+name)
	mustVault(t, "delete", stack.Mount+"/clusters/"+name)
	if code, _ := rawVault(t, http.MethodGet, stack.Mount+"/clusters/"+name, nil); code != http.StatusNotFound {
		t.Errorf("GET clusters/%s after delete: HTTP %d, want 404", name, code)
	}
	done()

	done = step(t, "vault lease revoke -sync <id>: succeeds, 401 within 15 s, Secret gone")
	start := time.Now()
	res := vaultCLI(t, "lease", "revoke", "-sync", l1.LeaseID)
	assertNoJWTIn(t, "revoke output", res.Stdout+res.Stderr, st.TokenRequesterJWT)
	if res.ExitCode != 0 {
		t.Fatalf("vault lease revoke -sync after the role and cluster were deleted: %s", res)
	}
	took := waitStatusOn(t, st.First, l1.Data["service_account_token"], http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("token rejected %s after the revoke", secs(took))
	waitClusterSecrets(t, st.First, name, 1, 5*time.Second)
	done()

	done = step(t, "vault lease revoke -sync -prefix %s: succeeds, 401 within 15 s, no Secret left", prefix)
	start = time.Now()
	res = vaultCLI(t, "lease", "revoke", "-sync", "-prefix", prefix)
	assertNoJWTIn(t, "revoke output", res.Stdout+res.Stderr, st.TokenRequesterJWT)
	if res.ExitCode != 0 {
		t.Fatalf("vault lease revoke -sync -prefix after the role and cluster were deleted: %s", res)
	}
	took = waitStatusOn(t, st.First, l2.Data["service_account_token"], http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("token rejected %s after the revoke -prefix", secs(took))
	waitClusterSecrets(t, st.First, name, 0, 5*time.Second)
	leases, err := listLeases(testCtx(t, time.Minute), vaultClient(t), stack.Mount, name)
	if err != nil || len(leases) != 0 {
		t.Errorf("leases of %s after the revokes: %v (%v), want none", name, leases, err)
	}
	done()
}

// TestTrustCredsStatusCodes: creds/ errors carry the status that says
// whether retrying can help (400 caller/operator, 502 credential or RBAC,
// 503 unreachable, 504 timeout), create nothing, and never carry a JWT.
func TestTrustCredsStatusCodes(t *testing.T) {
	t.Parallel()
	second := secondCluster(t)
	// A real JWT of the second cluster for a service account without any
	// RBAC: the credential of the 502 case, and a valid-looking one for the
	// fake endpoints (so no working credential is sent to them).
	const noRBACSA = "trust-no-rbac"
	ctx := testCtx(t, 2*time.Minute)
	cs, err := second.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: noRBACSA}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("second cluster: create service account default/%s: %v", noRBACSA, err)
	}
	noRBACJWT, err := second.CreateToken(ctx, "default", noRBACSA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	jwts := []string{st.TokenRequesterJWT, second.TokenRequesterJWT, noRBACJWT}

	// credsStatus GETs creds/<role> (query optional) and checks the status
	// and that the error names no JWT; it returns the error text.
	credsStatus := func(t *testing.T, role, query string, want int) string {
		t.Helper()
		start := time.Now()
		code, vr := rawVault(t, http.MethodGet, stack.Mount+"/creds/"+role+query, nil)
		text := strings.Join(vr.Errors, "; ")
		assertNoJWTIn(t, "the creds error", text, jwts...)
		if code != want {
			t.Errorf("GET creds/%s%s: HTTP %d after %s, want %d: %s", role, query, code, secs(time.Since(start)), want, text)
		} else {
			t.Logf("GET creds/%s%s: HTTP %d after %s: %s", role, query, code, secs(time.Since(start)), text)
		}
		return text
	}

	t.Run("unknown role 400", func(t *testing.T) {
		t.Parallel()
		credsStatus(t, "trust-no-such-role", "", http.StatusBadRequest)
	})

	t.Run("audience the role does not list 400", func(t *testing.T) {
		t.Parallel()
		const name = "trust-audience"
		writeClusterEntry(t, name, clusterArgs(st.First)...)
		writeRoleOnCluster(t, name, name, "ttl=5m")
		credsStatus(t, name, "?audiences=sts.amazonaws.com", http.StatusBadRequest)
		if n := clusterSecrets(t, st.First, name); len(n) != 0 {
			t.Errorf("bound Secrets of clusters/%s after the refused audience: %v, want none", name, n)
		}
	})

	t.Run("missing service account 400 and nothing left", func(t *testing.T) {
		t.Parallel()
		const name, sa = "trust-missing-sa", "trust-missing-sa"
		// The requester may request tokens for this (absent) name, so the
		// API server answers 404, not 403.
		grantTokenFor(t, second, sa)
		cleanupLeftovers(t, stack.Mount+"/creds/"+name, name, second)
		writeClusterEntry(t, name, clusterArgs(second)...)
		mustVault(t, "write", stack.Mount+"/roles/"+name, "cluster="+name,
			"service_account_name="+sa, "service_account_namespace="+stack.ScannerNamespace, "ttl=5m")
		t.Cleanup(func() { vaultCLI(t, "delete", stack.Mount+"/roles/"+name) })
		credsStatus(t, name, "", http.StatusBadRequest)
		waitClusterSecrets(t, second, name, 0, 10*time.Second)
	})

	t.Run("closed port 503", func(t *testing.T) {
		t.Parallel()
		const name = "trust-closed"
		writeClusterEntry(t, name, fmt.Sprintf("kubernetes_host=https://127.0.0.1:%d", closedPort(t)),
			"kubernetes_ca_cert=@"+st.First.CAFile(), "service_account_jwt="+noRBACJWT)
		writeRoleOnCluster(t, name, name, "ttl=5m")
		credsStatus(t, name, "", http.StatusServiceUnavailable)
	})

	t.Run("API server never answers 504", func(t *testing.T) {
		t.Parallel()
		const name = "trust-hang"
		hang := newHangingListener(t)
		ca := writePEM(t, "hang-ca.pem", certPEM(hang.Certificate().Raw))
		writeClusterEntry(t, name, "kubernetes_host="+hang.URL, "kubernetes_ca_cert=@"+ca, "service_account_jwt="+noRBACJWT)
		writeRoleOnCluster(t, name, name, "ttl=5m")
		credsStatus(t, name, "", http.StatusGatewayTimeout)
	})

	t.Run("requester without RBAC 502 naming check", func(t *testing.T) {
		t.Parallel()
		const name = "trust-no-rbac"
		cleanupLeftovers(t, stack.Mount+"/creds/"+name, name, second)
		writeClusterEntry(t, name, "kubernetes_host="+second.URL(), "kubernetes_ca_cert=@"+second.CAFile(), "service_account_jwt="+noRBACJWT)
		writeRoleOnCluster(t, name, name, "ttl=5m")
		text := credsStatus(t, name, "", http.StatusBadGateway)
		if !strings.Contains(text, "clusters/"+name+"/check") {
			t.Errorf("the 502 error does not point to clusters/%s/check: %s", name, text)
		}
		waitClusterSecrets(t, second, name, 0, 10*time.Second)
	})
}

// kubeconfigWorks writes the lease's kubeconfig (0600) and lists pods in
// scanner-namespace with kubectl; the kubeconfig must point at c.
func kubeconfigWorks(t *testing.T, sec stack.CLISecret, c *stack.KubeCluster) {
	t.Helper()
	if sec.Data["kubernetes_host"] != c.URL() {
		t.Errorf("kubernetes_host %q, want the %s cluster %s", sec.Data["kubernetes_host"], c.Name, c.URL())
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(sec.Data["kubeconfig"])); err != nil {
		t.Fatal(err)
	}
	if r := kubectl(t, kc, "get", "pods", "-n", stack.ScannerNamespace, "-o", "name"); r.ExitCode != 0 {
		t.Fatalf("kubectl get pods with the kubeconfig (%s cluster): %s", c.Name, r)
	}
	if code := statusOn(t, c, sec.Data["service_account_token"]); code != http.StatusOK {
		t.Fatalf("the token on the %s cluster: HTTP %d, want 200", c.Name, code)
	}
}

// grantTokenFor adds (and removes at the end) a Role and RoleBinding in c's
// scanner-namespace letting the token requester create tokens for sa.
func grantTokenFor(t *testing.T, c *stack.KubeCluster, sa string) {
	t.Helper()
	name := "trust-token-for-" + sa
	manifest := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: %[1]s, namespace: %[2]s}
rules:
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  resourceNames: ["%[3]s"]
  verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: %[1]s, namespace: %[2]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: %[1]s}
subjects:
- {kind: ServiceAccount, name: %[4]s, namespace: %[5]s}
`, name, stack.ScannerNamespace, sa, stack.RequesterSA, stack.RequesterNamespace)
	p := writePEM(t, "grant.yaml", manifest)
	ctx := testCtx(t, time.Minute)
	if res, err := c.KubectlAdmin(ctx, "apply", "-f", p); err != nil || res.ExitCode != 0 {
		t.Fatalf("%s cluster: kubectl apply: %v %s", c.Name, err, res)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := c.KubectlAdmin(ctx, "delete", "-f", p); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: %s cluster: kubectl delete: %v %s", c.Name, err, res)
		}
	})
	// RBAC reaches the authorizer through an informer.
	_, err := stack.Poll(ctx, 20*time.Second, 250*time.Millisecond, func() (bool, error) {
		res, err := c.KubectlAdmin(ctx, "auth", "can-i", "create", "serviceaccounts/"+sa, "--subresource=token", "-n", stack.ScannerNamespace,
			"--as=system:serviceaccount:"+stack.RequesterNamespace+":"+stack.RequesterSA)
		return err == nil && strings.TrimSpace(res.Stdout) == "yes", err
	})
	if err != nil {
		t.Fatalf("%s cluster: the requester never got create serviceaccounts/token: %v", c.Name, err)
	}
}

func fieldNames(m map[string]any) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// entryDiff names the fields of a clusters/ read that differ.
func entryDiff(before, after map[string]any) string {
	var out []string
	seen := map[string]bool{}
	for _, m := range []map[string]any{before, after} {
		for k := range m {
			if seen[k] {
				continue
			}
			seen[k] = true
			if !reflect.DeepEqual(before[k], after[k]) {
				out = append(out, fmt.Sprintf("%s: %.60q → %.60q", k, fmt.Sprint(before[k]), fmt.Sprint(after[k])))
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}
