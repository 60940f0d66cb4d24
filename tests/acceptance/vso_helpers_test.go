package acceptance

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Names of the Vault Secrets Operator test: its own namespace, auth mount,
// policy and auth roles, so it runs beside the rest of the suite.
const (
	vsoNamespace  = "vso-test"
	vsoAuthMount  = "kubernetes-vso"
	vsoAuthSA     = "vso-auth"           // the identity VSO logs in to Vault as
	vsoReviewerSA = "vso-token-reviewer" // Vault's token reviewer
	vsoPolicy     = "vso-scanner"
	// vsoRevokePolicy lets VSO revoke what it fetched: it revokes a
	// VaultDynamicSecret's lease on deletion through sys/leases/revoke.
	vsoRevokePolicy = "vso-revoke"
	// vsoLoginLong outlives every lease of the test; vsoLoginShort (20 s,
	// not renewable past that) is shorter than the lease it fetches;
	// vsoLoginNoRevoke has only vsoPolicy, a policy written for reads.
	vsoLoginLong     = "vso-login-long"
	vsoLoginShort    = "vso-login-short"
	vsoLoginNoRevoke = "vso-login-norevoke"
	vsoLoginShortTTL = 20 * time.Second
	// vsoLoginRenewed has a short token_ttl that VSO renews up to 10 min.
	vsoLoginRenewed    = "vso-login-renewed"
	vsoLoginRenewedTTL = 15 * time.Second
)

// vdsResource is VSO's VaultDynamicSecret by its full name: external-secrets
// has a kind of the same name, and both may be installed.
const vdsResource = "vaultdynamicsecrets.secrets.hashicorp.com"

// vsoKubeManifest is what an operator installs for VSO's Kubernetes auth:
// the namespace, the service account VSO logs in as, and a token reviewer
// for Vault with system:auth-delegator.
const vsoKubeManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: vso-test
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: vso-auth
  namespace: vso-test
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: vso-token-reviewer
  namespace: vso-test
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: vso-token-reviewer-auth-delegator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- kind: ServiceAccount
  name: vso-token-reviewer
  namespace: vso-test
`

// vsoPolicyHCL lets VSO read (GET) and update (PUT) the credentials of the
// roles named vso-*, and nothing else of the mount.
const vsoPolicyHCL = `path "scanner/creds/vso-*" {
  capabilities = ["read", "update"]
}
`

// vsoRevokePolicyHCL allows revoking only leases of those roles.
const vsoRevokePolicyHCL = `path "sys/leases/revoke" {
  capabilities       = ["update"]
  allowed_parameters = { "lease_id" = ["scanner/creds/vso-*"] }
}
`

// vsoAuthManifest is the VaultAuths, one per Vault auth role.
const vsoAuthManifest = `apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata:
  name: vso-login-long
  namespace: vso-test
spec:
  vaultConnectionRef: vso-vault
  method: kubernetes
  mount: kubernetes-vso
  kubernetes:
    role: vso-login-long
    serviceAccount: vso-auth
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata:
  name: vso-login-short
  namespace: vso-test
spec:
  vaultConnectionRef: vso-vault
  method: kubernetes
  mount: kubernetes-vso
  kubernetes:
    role: vso-login-short
    serviceAccount: vso-auth
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata:
  name: vso-login-norevoke
  namespace: vso-test
spec:
  vaultConnectionRef: vso-vault
  method: kubernetes
  mount: kubernetes-vso
  kubernetes:
    role: vso-login-norevoke
    serviceAccount: vso-auth
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata:
  name: vso-login-renewed
  namespace: vso-test
spec:
  vaultConnectionRef: vso-vault
  method: kubernetes
  mount: kubernetes-vso
  kubernetes:
    role: vso-login-renewed
    serviceAccount: vso-auth
`

// setupVSOAuth applies vsoKubeManifest, enables Vault's kubernetes auth
// method at kubernetes-vso against the stack's API server (reviewer JWT of
// vso-token-reviewer, the API server's CA), writes the policy and the two
// auth roles. Cleanup disables the auth mount, which revokes every login
// of VSO and so every lease VSO still holds.
func setupVSOAuth(t *testing.T) {
	t.Helper()
	ctx := testCtx(t, 2*time.Minute)
	kubectlAdminApply(t, vsoKubeManifest)
	reviewerJWT, err := st.First.CreateToken(ctx, vsoNamespace, vsoReviewerSA, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	authMethodAtEnd(t, vsoAuthMount, "kubernetes")
	policyAtEnd(t, vsoPolicy, vsoPolicyHCL)
	policyAtEnd(t, vsoRevokePolicy, vsoRevokePolicyHCL)
	writeAll(t, []vaultWrite{
		{"auth/" + vsoAuthMount + "/config", map[string]any{
			"kubernetes_host":    st.Kube.URL,
			"kubernetes_ca_cert": string(st.Kube.PKI.CAPEM),
			"token_reviewer_jwt": reviewerJWT,
		}},
		{"auth/" + vsoAuthMount + "/role/" + vsoLoginLong, map[string]any{
			"bound_service_account_names":      vsoAuthSA,
			"bound_service_account_namespaces": vsoNamespace,
			"token_policies":                   vsoPolicy + "," + vsoRevokePolicy,
			"token_ttl":                        "10m",
			"token_max_ttl":                    "30m",
		}},
		{"auth/" + vsoAuthMount + "/role/" + vsoLoginShort, map[string]any{
			"bound_service_account_names":      vsoAuthSA,
			"bound_service_account_namespaces": vsoNamespace,
			"token_policies":                   vsoPolicy + "," + vsoRevokePolicy,
			"token_ttl":                        vsoLoginShortTTL.String(),
			"token_max_ttl":                    vsoLoginShortTTL.String(),
		}},
		{"auth/" + vsoAuthMount + "/role/" + vsoLoginRenewed, map[string]any{
			"bound_service_account_names":      vsoAuthSA,
			"bound_service_account_namespaces": vsoNamespace,
			"token_policies":                   vsoPolicy + "," + vsoRevokePolicy,
			"token_ttl":                        vsoLoginRenewedTTL.String(),
			"token_max_ttl":                    "10m",
		}},
		{"auth/" + vsoAuthMount + "/role/" + vsoLoginNoRevoke, map[string]any{
			"bound_service_account_names":      vsoAuthSA,
			"bound_service_account_namespaces": vsoNamespace,
			"token_policies":                   vsoPolicy,
			"token_ttl":                        "10m",
			"token_max_ttl":                    "30m",
		}},
	})
}

// vaultConnectionManifest is a VaultConnection named vso-vault in
// namespace to Vault's TLS listener, verified with Vault's CA (the Secret
// vso-vault-ca, key ca.crt, where VSO reads it).
func vaultConnectionManifest(namespace string) string {
	var ca strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(st.Vault.TLS.CAPEM)), "\n") {
		ca.WriteString("    " + line + "\n")
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: vso-vault-ca
  namespace: %[1]s
stringData:
  ca.crt: |
%[2]s---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultConnection
metadata:
  name: vso-vault
  namespace: %[1]s
spec:
  address: %[3]s
  caCertSecretRef: vso-vault-ca
`, namespace, ca.String(), st.Vault.TLSAddr)
}

// kubectlAdminApply applies a manifest as the cluster admin.
func kubectlAdminApply(t *testing.T, manifest string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := st.KubectlAdmin(testCtx(t, time.Minute), "apply", "-f", path)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl apply:\n%s\n%v %s", manifest, err, res)
	}
}

// vdsManifest is a VaultDynamicSecret named name on scanner/creds/<role>,
// synced into the Secret of the same name, with extra spec lines (indented
// two spaces).
func vdsManifest(name, role, auth string, extraSpec ...string) string {
	m := fmt.Sprintf(`apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultDynamicSecret
metadata:
  name: %s
  namespace: vso-test
spec:
  vaultAuthRef: %s
  mount: scanner
  path: creds/%s
  destination:
    name: %s
    create: true
`, name, auth, role, name)
	for _, l := range extraSpec {
		m += "  " + l + "\n"
	}
	return m
}

// applyVDS creates a VaultDynamicSecret; cleanup deletes it (and waits for
// VSO to drop its finalizer) unless the test already did.
func applyVDS(t *testing.T, name, manifest string) {
	t.Helper()
	kubectlAdminApply(t, manifest)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := st.KubectlAdmin(ctx, "delete", vdsResource, name, "-n", vsoNamespace, "--ignore-not-found", "--timeout=45s")
		if err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: delete VaultDynamicSecret %s: %v %s", name, err, res)
		}
	})
}

// vsoSecret is what VSO wrote into a destination Secret.
type vsoSecret struct {
	Token, Kubeconfig string
	Expires           time.Time
	// Seen is when the test first read this token from the Secret.
	Seen time.Time
}

// waitVSOSecret polls the destination Secret name until it holds a token
// other than notToken and returns it.
func waitVSOSecret(t *testing.T, name, notToken string, timeout time.Duration) vsoSecret {
	t.Helper()
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, timeout+30*time.Second)
	var got vsoSecret
	_, err = stack.Poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
		sec, err := cs.CoreV1().Secrets(vsoNamespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		tok := string(sec.Data["service_account_token"])
		if tok == "" || tok == notToken {
			return false, nil
		}
		exp, err := time.Parse(time.RFC3339, string(sec.Data["expires_at"]))
		if err != nil {
			return false, stack.Permanent(fmt.Errorf("Secret %s: expires_at %q: %v", name, sec.Data["expires_at"], err))
		}
		got = vsoSecret{Token: tok, Kubeconfig: string(sec.Data["kubeconfig"]), Expires: exp, Seen: time.Now()}
		return true, nil
	})
	if err != nil {
		t.Fatalf("Secret %s/%s: no new credential from VSO within %s: %v", vsoNamespace, name, timeout, err)
	}
	return got
}

// waitVSOSynced waits until VSO is done with the first sync of a new
// VaultDynamicSecret, which it runs twice (two leases of role), and
// returns the credential of the second, the one the Secret keeps.
func waitVSOSynced(t *testing.T, name, role string) vsoSecret {
	t.Helper()
	waitRoleLeases(t, role, 2, time.Minute)
	var gens string
	_, err := stack.Poll(testCtx(t, time.Minute), 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		res, err := st.KubectlAdmin(testCtx(t, time.Minute), "get", vdsResource, name, "-n", vsoNamespace,
			"-o", "jsonpath={.metadata.generation} {.status.lastGeneration}")
		if err != nil || res.ExitCode != 0 {
			return false, fmt.Errorf("kubectl get vaultdynamicsecret %s: %v %s", name, err, res)
		}
		gens = res.Stdout
		g := strings.Fields(gens)
		return len(g) == 2 && g[0] == g[1], nil
	})
	if err != nil {
		t.Fatalf("VaultDynamicSecret %s: generation and status.lastGeneration %q never met: %v", name, gens, err)
	}
	return waitVSOSecret(t, name, "", 30*time.Second)
}

// waitWorkingVSOSecret waits until the destination Secret holds a token
// other than notToken that the API server accepts (VSO may have written,
// and the login may have ended, others in between).
func waitWorkingVSOSecret(t *testing.T, name, notToken string, timeout time.Duration) vsoSecret {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sec := waitVSOSecret(t, name, notToken, time.Until(deadline))
		if tokenStatus(t, sec.Token) == http.StatusOK {
			return sec
		}
		notToken = sec.Token
	}
}

// whoami runs `kubectl auth whoami` with a kubeconfig and returns the user
// name the API server sees.
func whoami(t *testing.T, kubeconfig string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(path, []byte(kubeconfig)); err != nil {
		t.Fatal(err)
	}
	res := kubectl(t, path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if res.ExitCode != 0 {
		t.Fatalf("kubectl auth whoami with VSO's kubeconfig: %s", res)
	}
	return strings.TrimSpace(res.Stdout)
}

// waitRoleLeases polls until role has n leases.
func waitRoleLeases(t *testing.T, role string, n int, timeout time.Duration) {
	t.Helper()
	got := -1
	_, err := stack.Poll(testCtx(t, timeout+30*time.Second), timeout, 500*time.Millisecond, func() (bool, error) {
		got = len(roleLeases(t, role))
		return got == n, nil
	})
	if err != nil {
		t.Fatalf("role %s: want %d leases, have %d: %v", role, n, got, err)
	}
}

// vdsEvents returns the reasons and messages of the events VSO recorded
// for a VaultDynamicSecret in vso-test.
func vdsEvents(t *testing.T, name string) []string {
	t.Helper()
	return vdsEventsIn(t, vsoNamespace, name)
}

// waitVDSEvent polls the events of a VaultDynamicSecret until one starts
// with prefix and contains substr.
func waitVDSEvent(t *testing.T, namespace, name, prefix, substr string) {
	t.Helper()
	var events []string
	_, err := stack.Poll(testCtx(t, time.Minute), 45*time.Second, time.Second, func() (bool, error) {
		events = vdsEventsIn(t, namespace, name)
		for _, e := range events {
			if strings.HasPrefix(e, prefix) && strings.Contains(e, substr) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("VaultDynamicSecret %s/%s: no event %q…%q; events: %q", namespace, name, prefix, substr, events)
	}
}

func vdsEventsIn(t *testing.T, namespace, name string) []string {
	t.Helper()
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().Events(namespace).List(testCtx(t, 30*time.Second), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=VaultDynamicSecret,involvedObject.name=" + name,
	})
	if err != nil {
		t.Fatalf("list events of %s: %v", name, err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}
