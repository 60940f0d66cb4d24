package acceptance

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// TestVaultSecretsOperator runs HashiCorp Vault Secrets Operator v0.10.0,
// unmodified, out of cluster against the stack: it logs in with Vault's
// kubernetes auth method and syncs VaultDynamicSecrets on scanner/creds/
// into Kubernetes Secrets. The operator is started once here and shared by
// the parallel subtests; each subtest has its own plugin role.
//
// Role TTLs (short, so the whole test takes about a minute):
// vso-get 30 s, vso-put 45 s (asked for by the PUT), vso-revoke* 45 s,
// vso-login 90 s under a 20 s login, vso-renewed 40 s under a 15 s login
// renewed up to 10 min.
func TestVaultSecretsOperator(t *testing.T) {
	t.Parallel()
	done := step(t, "VSO: kubernetes auth at %s, policies %s and %s, its auth roles", vsoAuthMount, vsoPolicy, vsoRevokePolicy)
	setupVSOAuth(t)
	done()

	done = step(t, "VSO: CRDs, operator out of cluster (leader election off, listeners on 127.0.0.1)")
	bin, crds, err := stack.ResolveVSO(testCtx(t, 30*time.Minute), t)
	if err != nil {
		t.Fatal(err)
	}
	vso, err := st.StartVSO(testCtx(t, 2*time.Minute), bin, crds, vsoNamespace)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the auth mount's cleanup, so it runs before it: the
	// operator is gone before its logins (and their leases) are revoked.
	t.Cleanup(func() {
		vso.Stop()
		if t.Failed() {
			t.Logf("---- VSO log (%s) ----\n%s", vso.Proc.LogPath, vso.Proc.Tail(80))
		}
	})
	kubectlAdminApply(t, vaultConnectionManifest(vsoNamespace)+"---\n"+vsoAuthManifest)
	done()

	t.Run("ListensOnlyOnLoopback", func(t *testing.T) {
		addrs, err := stack.ListenAddrs(vso.Proc.Pid())
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) < 2 {
			t.Errorf("VSO listens on %v; want at least its metrics and probe listeners", addrs)
		}
		for _, a := range addrs {
			if !a.Addr().IsLoopback() {
				t.Errorf("VSO listens on %s, not on loopback", a)
			}
		}
	})

	t.Run("group", func(t *testing.T) {
		t.Run("GetRotatesAtTwoThirds", testVSOGetRotates)
		t.Run("PutWithParams", testVSOPutParams)
		t.Run("DeleteRevokes", testVSODeleteRevokes)
		t.Run("LoginCapsCredential", testVSOLoginCapsCredential)
		t.Run("RenewedLoginKeepsCredential", testVSORenewedLoginKeepsCredential)
		t.Run("PolicyBoundsWhatANamespaceGets", testVSOPolicyBounds)
		t.Run("LoginCannotRevokeOthersLeases", testVSOLoginRevokeBounds)
		t.Run("OtherNamespaceCannotBorrowTheLogin", testVSOOtherNamespace)
		t.Run("VaultCertificateIsVerified", testVSOVerifiesVault)
	})

	t.Run("NoTokenInOperatorLog", func(t *testing.T) {
		b, err := os.ReadFile(vso.Proc.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		assertNoJWTIn(t, "the VSO log", string(b))
	})
}

// (1) and (2): a VaultDynamicSecret without params is a GET; the Secret's
// kubeconfig works with kubectl. The lease is not renewable, so VSO fetches
// a new credential at about two thirds of it (renewalPercent 67 plus up to
// 10% jitter) and does not revoke the old one, which lives until its lease
// ends and then gets 401. Under a login that outlives the lease (10 min),
// the credential lives its whole lease.
func testVSOGetRotates(t *testing.T) {
	t.Parallel()
	const role, ttl = "vso-get", 30 * time.Second
	writeRole(t, role, "ttl=30s", "max_ttl=30s")
	applyVDS(t, role, vdsManifest(role, role, vsoLoginLong))

	done := step(t, "VSO writes Secret %s (first sync done twice); kubectl with its kubeconfig is scanner-sa", role)
	first := waitVSOSynced(t, role, role)
	if u := whoami(t, first.Kubeconfig); u != "system:serviceaccount:"+stack.ScannerNamespace+":"+stack.ScannerSA {
		t.Fatalf("kubectl auth whoami: %q, want scanner-sa", u)
	}
	if d := time.Until(first.Expires); d > ttl+time.Second {
		t.Fatalf("expires_at %s away, want at most the role's 30 s", secs(d))
	}
	done()

	done = step(t, "VSO writes a new credential before the old one expires; the old one still works then")
	second := waitVSOSecret(t, role, first.Token, ttl+15*time.Second)
	issued := first.Expires.Add(-ttl)
	frac := second.Seen.Sub(issued).Seconds() / ttl.Seconds()
	t.Logf("new credential after %.0f%% of the lease, %s before the old one's expires_at", 100*frac, secs(first.Expires.Sub(second.Seen)))
	if frac < 0.5 || !second.Seen.Before(first.Expires) {
		t.Errorf("re-sync at %.0f%% of the lease; want after half of it and before its end", 100*frac)
	}
	if code := tokenStatus(t, first.Token); code != http.StatusOK {
		t.Errorf("old token HTTP %d when the new one was written; VSO should not revoke it", code)
	}
	if u := whoami(t, second.Kubeconfig); !strings.HasSuffix(u, ":"+stack.ScannerSA) {
		t.Errorf("kubectl auth whoami with the new kubeconfig: %q", u)
	}
	done()

	done = step(t, "the old token dies at its lease end, not before")
	took := waitTokenStatus(t, first.Token, http.StatusUnauthorized, time.Until(first.Expires)+25*time.Second, first.Expires)
	t.Logf("old token rejected %s after its expires_at", secs(took))
	if took < -2*time.Second {
		t.Errorf("old token rejected %s before its expires_at", secs(-took))
	}
	if code := tokenStatus(t, second.Token); code != http.StatusOK && time.Now().Before(second.Expires) {
		t.Errorf("new token HTTP %d before its expires_at", code)
	}
	done()
}

// (1) with params: VSO sends a PUT; kubernetes_namespaces and ttl reach the
// plugin (one per-lease ServiceAccount for team-a and team-b, a 45 s lease).
func testVSOPutParams(t *testing.T) {
	t.Parallel()
	ensureEphemeralSetup(t)
	const role = "vso-put"
	writeEphemeralRole(t, role, map[string]any{
		"kubernetes_role_name":          podReader,
		"allowed_kubernetes_namespaces": teamA + "," + teamB,
		"ttl":                           "90s",
		"max_ttl":                       "2m",
	})
	applyVDS(t, role, vdsManifest(role, role, vsoLoginLong,
		"params:",
		"  kubernetes_namespaces: team-a,team-b",
		`  ttl: "45s"`))

	done := step(t, "VSO writes Secret %s from a PUT with kubernetes_namespaces and ttl", role)
	sec := waitVSOSecret(t, role, "", time.Minute)
	if d := time.Until(sec.Expires); d > 46*time.Second || d < 30*time.Second {
		t.Errorf("expires_at %s away; the PUT's ttl=45s did not reach the plugin", secs(d))
	}
	if u := whoami(t, sec.Kubeconfig); !strings.HasPrefix(u, "system:serviceaccount:"+teamA+":") {
		t.Errorf("kubectl auth whoami: %q, want a per-lease ServiceAccount in %s", u, teamA)
	}
	path := t.TempDir() + "/kubeconfig"
	if err := stack.WriteFile0600(path, []byte(sec.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{teamA, teamB} {
		if r := kubectl(t, path, "get", "pods", "-n", ns); r.ExitCode != 0 {
			t.Errorf("kubectl get pods -n %s with VSO's kubeconfig: %s", ns, r)
		}
	}
	done()
}

// (3) Deleting a VaultDynamicSecret makes VSO revoke its current lease
// (PUT sys/leases/revoke), and the token dies within seconds. VSO v0.10.0
// does so whether or not spec.revoke is set, and only if its login's policy
// allows update on sys/leases/revoke: otherwise it records a warning event,
// drops its finalizer all the same, and the token lives to its lease end.
// VSO syncs a new VaultDynamicSecret twice (its finalizer update bumps the
// generation): the first lease is never revoked and ends at its TTL.
func testVSODeleteRevokes(t *testing.T) {
	t.Parallel()
	const ttl = 45 * time.Second
	for _, tc := range []struct {
		name, auth string
		spec       []string
		revoked    bool
	}{
		{"vso-revoke", vsoLoginLong, []string{"revoke: true"}, true},
		{"vso-revoke-unset", vsoLoginLong, nil, true},
		{"vso-revoke-denied", vsoLoginNoRevoke, []string{"revoke: true"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			role := tc.name
			writeRole(t, role, "ttl=45s", "max_ttl=45s")
			applyVDS(t, tc.name, vdsManifest(tc.name, role, tc.auth, tc.spec...))

			done := step(t, "VSO writes Secret %s; two leases exist for one VaultDynamicSecret", tc.name)
			sec := waitVSOSynced(t, tc.name, role)
			if code := tokenStatus(t, sec.Token); code != http.StatusOK {
				t.Fatalf("synced token HTTP %d", code)
			}
			done()

			done = step(t, "delete the VaultDynamicSecret (revoked: %v)", tc.revoked)
			deleted := time.Now()
			res, err := st.KubectlAdmin(testCtx(t, time.Minute), "delete", vdsResource, tc.name, "-n", vsoNamespace, "--timeout=45s")
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("kubectl delete vaultdynamicsecret: %v %s", err, res)
			}
			if tc.revoked {
				took := waitTokenStatus(t, sec.Token, http.StatusUnauthorized, 25*time.Second, deleted)
				t.Logf("token rejected %s after the delete, %s before its expires_at", secs(took), secs(sec.Expires.Sub(deleted.Add(took))))
				waitRoleLeases(t, role, 1, 10*time.Second)
			} else {
				waitVDSEvent(t, vsoNamespace, tc.name, "SecretLeaseRevoke: Failed to revoke lease", "permission denied")
				// Past the API server's 10 s token cache: still valid.
				time.Sleep(time.Until(deleted.Add(12 * time.Second)))
				if code := tokenStatus(t, sec.Token); code != http.StatusOK {
					t.Errorf("token HTTP %d after a revoke that Vault refused", code)
				}
				if n := len(roleLeases(t, role)); n != 2 {
					t.Errorf("%d leases after a refused revoke, want 2", n)
				}
				took := waitTokenStatus(t, sec.Token, http.StatusUnauthorized, time.Until(sec.Expires)+25*time.Second, sec.Expires)
				t.Logf("token rejected %s after its expires_at", secs(took))
				if took < -2*time.Second {
					t.Errorf("token rejected %s before its expires_at", secs(-took))
				}
			}
			done()

			done = step(t, "what is left ends at the role's TTL")
			waitRoleLeases(t, role, 0, time.Until(sec.Expires)+ttl)
			waitSecretCount(t, role, 0, 20*time.Second)
			done()
		})
	}
}

// (4) VSO's own Vault login bounds the credential: under a 20 s login the
// 90 s credential dies when the login expires (Vault revokes the leases a
// token created when it expires). By then VSO has logged in again and
// written a new credential. testVSORenewedLoginKeepsCredential and
// testVSOGetRotates show the setting that avoids it.
func testVSOLoginCapsCredential(t *testing.T) {
	t.Parallel()
	const role, ttl = "vso-login", 90 * time.Second
	writeRole(t, role, "ttl=90s", "max_ttl=90s")
	applyVDS(t, role, vdsManifest(role, role, vsoLoginShort))

	done := step(t, "VSO writes Secret %s under a %s login", role, vsoLoginShortTTL)
	first := waitVSOSynced(t, role, role)
	if code := tokenStatus(t, first.Token); code != http.StatusOK {
		t.Fatalf("synced token HTTP %d", code)
	}
	done()

	done = step(t, "the credential dies with the login, long before its expires_at")
	took := waitTokenStatus(t, first.Token, http.StatusUnauthorized, vsoLoginShortTTL+25*time.Second, first.Seen)
	early := first.Expires.Sub(first.Seen.Add(took))
	t.Logf("token rejected %s after it was synced, %s before its expires_at", secs(took), secs(early))
	if early < ttl/3 {
		t.Errorf("token died only %s before its expires_at; the login should have ended it early", secs(early))
	}
	done()

	done = step(t, "VSO has logged in again and written a working credential by then")
	next := waitWorkingVSOSecret(t, role, first.Token, 40*time.Second)
	after := next.Seen.Sub(first.Seen.Add(took))
	t.Logf("a working credential in the Secret %s after the first one died", secs(after))
	if after > 5*time.Second {
		t.Errorf("the Secret held no working credential for %s after the login ended", secs(after))
	}
	done()
}

// (4), the setting that avoids it: a renewable login. Under a 15 s
// token_ttl renewed up to a 10 min token_max_ttl, VSO renews its login and
// the 40 s credential outlives the login's first TTL and ends only at its
// own expires_at: what caps the credential is token_max_ttl.
func testVSORenewedLoginKeepsCredential(t *testing.T) {
	t.Parallel()
	const role = "vso-renewed"
	writeRole(t, role, "ttl=40s", "max_ttl=40s")
	applyVDS(t, role, vdsManifest(role, role, vsoLoginRenewed))

	done := step(t, "VSO writes Secret %s under a %s login renewed up to 10 min", role, vsoLoginRenewedTTL)
	sec := waitVSOSynced(t, role, role)
	done()

	done = step(t, "past the login's first TTL (and the token cache) the credential still works")
	time.Sleep(time.Until(sec.Seen.Add(vsoLoginRenewedTTL + 12*time.Second)))
	if !time.Now().Before(sec.Expires) {
		t.Fatalf("too slow: the check came after the credential's expires_at")
	}
	if code := tokenStatus(t, sec.Token); code != http.StatusOK {
		t.Fatalf("token HTTP %d %s after it was synced, before its expires_at: the login was not renewed", code, secs(time.Since(sec.Seen)))
	}
	done()

	done = step(t, "it dies at its expires_at, not before")
	took := waitTokenStatus(t, sec.Token, http.StatusUnauthorized, time.Until(sec.Expires)+25*time.Second, sec.Expires)
	t.Logf("token rejected %s after its expires_at", secs(took))
	if took < -2*time.Second {
		t.Errorf("token rejected %s before its expires_at", secs(-took))
	}
	done()
}

// A Kubernetes user who may write VaultDynamicSecrets in vso-test asks for
// creds/cluster-a, outside the policy of VSO's login: Vault refuses, VSO
// records the error, and no Secret is written.
func testVSOPolicyBounds(t *testing.T) {
	t.Parallel()
	const name = "vso-denied"
	applyVDS(t, name, vdsManifest(name, stack.RoleName, vsoLoginLong))
	done := step(t, "VaultDynamicSecret on creds/%s: sync error, no Secret", stack.RoleName)
	waitVDSEvent(t, vsoNamespace, name, "SecretSyncError:", "permission denied")
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(vsoNamespace).Get(testCtx(t, 30*time.Second), name, metav1.GetOptions{}); err == nil {
		t.Errorf("Secret %s was written for a path outside the policy", name)
	}
	done()
}

// Whoever holds VSO's login (vso-auth's Kubernetes token) may revoke only
// the leases of the vso-* roles: another role's lease, and reading another
// role's credentials, are refused (403) and its token keeps working.
func testVSOLoginRevokeBounds(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, time.Minute)
	other := readCreds(t, stack.RoleName, nil)
	jwt, err := st.First.CreateToken(ctx, vsoNamespace, vsoAuthSA, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	vc, err := vaultClient(t).Clone()
	if err != nil {
		t.Fatal(err)
	}
	login, err := vc.Logical().WriteWithContext(ctx, "auth/"+vsoAuthMount+"/login", map[string]any{"role": vsoLoginLong, "jwt": jwt})
	if err != nil || login == nil || login.Auth == nil {
		t.Fatalf("login as vso-auth: %v", err)
	}
	vc.SetToken(login.Auth.ClientToken)
	t.Cleanup(func() { _ = vc.Auth().Token().RevokeSelf("") })

	for _, tc := range []struct {
		what string
		call func() error
	}{
		{"revoke a lease of " + stack.RoleName, func() error {
			_, err := vc.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": other.LeaseID})
			return err
		}},
		{"read creds/" + stack.RoleName, func() error {
			_, err := vc.Logical().ReadWithContext(ctx, stack.Mount+"/creds/"+stack.RoleName)
			return err
		}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			if e := asVaultError(t, tc.what, tc.call()); e.Status != http.StatusForbidden {
				t.Errorf("%s with VSO's login: HTTP %d (%s), want 403", tc.what, e.Status, e.Text)
			}
		})
	}
	if code := tokenStatus(t, other.Token); code != http.StatusOK {
		t.Errorf("the other role's token HTTP %d after refused revokes", code)
	}
}

// A Kubernetes user who may write in another namespace (vso-other) tries
// to use the login of vso-test: a VaultDynamicSecret naming vso-test's
// VaultAuth is refused by VSO (the VaultAuth allows no other namespace),
// and a VaultAuth of their own with the same Vault auth role and a
// service account of the same name is refused by Vault (the role is bound
// to vso-test). Neither writes a Secret or issues a lease.
func testVSOOtherNamespace(t *testing.T) {
	t.Parallel()
	const ns, role = "vso-other", "vso-other"
	writeRole(t, role, "ttl=30s", "max_ttl=30s")
	kubectlAdminApply(t, `apiVersion: v1
kind: Namespace
metadata:
  name: vso-other
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: vso-auth
  namespace: vso-other
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata:
  name: vso-borrowed
  namespace: vso-other
spec:
  vaultConnectionRef: vso-vault
  method: kubernetes
  mount: kubernetes-vso
  kubernetes:
    role: vso-login-long
    serviceAccount: vso-auth
`+"---\n"+vaultConnectionManifest(ns))
	for _, tc := range []struct{ name, authRef, wantEvent string }{
		{"vso-cross-ref", vsoNamespace + "/" + vsoLoginLong, "is not allowed"},
		{"vso-borrowed", "vso-borrowed", "namespace not authorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kubectlAdminApply(t, strings.ReplaceAll(vdsManifest(tc.name, role, tc.authRef), "namespace: vso-test", "namespace: "+ns))
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if res, err := st.KubectlAdmin(ctx, "delete", vdsResource, tc.name, "-n", ns, "--ignore-not-found", "--timeout=45s"); err != nil || res.ExitCode != 0 {
					t.Logf("cleanup: delete VaultDynamicSecret %s/%s: %v %s", ns, tc.name, err, res)
				}
			})
			waitVDSEvent(t, ns, tc.name, "VaultClientConfigError:", tc.wantEvent)
			cs, err := st.Kube.AdminClient()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cs.CoreV1().Secrets(ns).Get(testCtx(t, 30*time.Second), tc.name, metav1.GetOptions{}); err == nil {
				t.Errorf("Secret %s/%s was written", ns, tc.name)
			}
		})
	}
	if leases := roleLeases(t, role); len(leases) != 0 {
		t.Errorf("%d leases of %s issued for another namespace", len(leases), role)
	}
}

// The network: VSO verifies Vault's certificate. A VaultConnection to the
// same TLS listener without Vault's CA fails the handshake (VSO records the
// x509 error), so no login, no read and no Secret.
func testVSOVerifiesVault(t *testing.T) {
	t.Parallel()
	const name = "vso-noca"
	kubectlAdminApply(t, fmt.Sprintf(`apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultConnection
metadata:
  name: vso-vault-noca
  namespace: vso-test
spec:
  address: %s
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata:
  name: vso-login-noca
  namespace: vso-test
spec:
  vaultConnectionRef: vso-vault-noca
  method: kubernetes
  mount: kubernetes-vso
  kubernetes:
    role: vso-login-long
    serviceAccount: vso-auth
`, st.Vault.TLSAddr))
	writeRole(t, name, "ttl=30s", "max_ttl=30s")
	applyVDS(t, name, vdsManifest(name, name, "vso-login-noca"))
	waitVDSEvent(t, vsoNamespace, name, "VaultClientConfigError:", "certificate signed by unknown authority")
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(vsoNamespace).Get(testCtx(t, 30*time.Second), name, metav1.GetOptions{}); err == nil {
		t.Errorf("Secret %s was written over an unverified connection", name)
	}
}
