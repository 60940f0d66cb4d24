package acceptance

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// terraformWrite makes the call Terraform's
// vault_kubernetes_service_account_token data source makes (provider v5.x):
// Logical().Write of creds/<role> with kubernetes_namespace (required),
// cluster_role_binding (false when unset) and ttl ("" when unset). It
// returns the HTTP status, and the secret or the error text.
func terraformWrite(t *testing.T, role, namespace string, clusterRoleBinding bool) (int, *vaultapi.Secret, string) {
	t.Helper()
	data := map[string]interface{}{"kubernetes_namespace": namespace, "cluster_role_binding": clusterRoleBinding, "ttl": ""}
	sec, err := vaultClient(t).Logical().WriteWithContext(testCtx(t, time.Minute), stack.Mount+"/creds/"+role, data)
	var respErr *vaultapi.ResponseError
	switch {
	case errors.As(err, &respErr):
		return respErr.StatusCode, nil, respErr.Error()
	case err != nil:
		t.Fatalf("write creds/%s: %v", role, err)
	}
	return http.StatusOK, sec, ""
}

// Terraform's request on a role of an existing service account: the body
// that restates the role issues a lease whose kubeconfig and token work;
// revoking the lease (what its expiry or `vault lease revoke` does) kills
// the token. A body naming another namespace, or a cluster-wide binding,
// gets a 400 and creates nothing.
func TestTerraformServiceAccountToken(t *testing.T) {
	t.Parallel()
	ensureTargetPod(t)
	role := "terraform"
	writeRole(t, role, "ttl=10m")
	revokeRoleLeasesAtEnd(t, role)

	done := step(t, "PUT %s/creds/%s with another namespace and with cluster_role_binding=true (refused)", stack.Mount, role)
	for _, req := range []struct {
		namespace          string
		clusterRoleBinding bool
	}{{"kube-system", false}, {stack.ScannerNamespace, true}} {
		code, _, answer := terraformWrite(t, role, req.namespace, req.clusterRoleBinding)
		if code != http.StatusBadRequest || !strings.Contains(answer, "existing service account") {
			t.Fatalf("%+v: HTTP %d %s, want a 400 naming the existing service account", req, code, answer)
		}
	}
	if n := secretCount(t, role); n != 0 {
		t.Fatalf("refused requests created %d bound Secrets", n)
	}
	if leases := roleLeases(t, role); len(leases) != 0 {
		t.Fatalf("refused requests left leases %v", leases)
	}
	done()

	done = step(t, "PUT %s/creds/%s with Terraform's body for the role's own namespace", stack.Mount, role)
	code, sec, answer := terraformWrite(t, role, stack.ScannerNamespace, false)
	if code != http.StatusOK {
		t.Fatalf("HTTP %d %s", code, answer)
	}
	c := credsFromSecret(t, sec, time.Now())
	revokeAtEnd(t, c.LeaseID)
	// What the data source stores: these three fields, the lease id, its
	// duration (the role's ttl, since ttl was "") and renewable.
	if c.str("service_account_name") != stack.ScannerSA || c.str("service_account_namespace") != stack.ScannerNamespace {
		t.Errorf("service account %s/%s, want %s/%s", c.str("service_account_namespace"), c.str("service_account_name"), stack.ScannerNamespace, stack.ScannerSA)
	}
	if c.LeaseDuration != 600 || c.Renewable {
		t.Errorf("lease_duration %d renewable %v, want 600 (the role's ttl) and false", c.LeaseDuration, c.Renewable)
	}
	if n := secretCount(t, role); n != 1 {
		t.Fatalf("bound Secrets %d, want 1", n)
	}
	done()

	done = step(t, "the kubeconfig lists pods; the token works")
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(c.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	if r := kubectl(t, kc, "get", "pods", "-o", "name"); r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod {
		t.Fatalf("kubectl get pods: %s", r)
	}
	if code := tokenStatus(t, c.Token); code != http.StatusOK {
		t.Fatalf("fresh token: HTTP %d", code)
	}
	done()

	done = step(t, "vault lease revoke %s kills the token", c.LeaseID)
	start := time.Now()
	mustVault(t, "lease", "revoke", c.LeaseID)
	took := waitTokenStatus(t, c.Token, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("token rejected %s after revoke", secs(took))
	waitSecretCount(t, role, 0, 5*time.Second)
	if r := kubectl(t, kc, "get", "pods", "-o", "name"); r.ExitCode == 0 {
		t.Fatalf("kubectl with the revoked kubeconfig still works: %s", r)
	}
	done()
}
