package acceptance

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

func ensureTargetPod(t *testing.T) {
	t.Helper()
	if err := st.CreateTargetPod(testCtx(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// Test 1: `vault read scanner/creds/cluster-a`; the kubeconfig (mode 0600)
// lists pods in scanner-namespace and is Forbidden in kube-system.
func TestCredsKubeconfigWithKubectl(t *testing.T) {
	ensureTargetPod(t)

	done := step(t, "vault read -format=json scanner/creds/cluster-a")
	sec := vaultReadCreds(t, stack.Mount+"/creds/"+stack.RoleName)
	done()
	t.Logf("lease %s, lease_duration %d, renewable %v", sec.LeaseID, sec.LeaseDuration, sec.Renewable)
	if !strings.HasPrefix(sec.LeaseID, stack.Mount+"/creds/"+stack.RoleName+"/") {
		t.Errorf("lease_id %q: want prefix %s/creds/%s/", sec.LeaseID, stack.Mount, stack.RoleName)
	}
	if sec.LeaseDuration != 900 || sec.Renewable {
		t.Errorf("lease_duration=%d renewable=%v, want 900 (role ttl 15m) and false", sec.LeaseDuration, sec.Renewable)
	}
	want := map[string]string{
		"cluster":                   stack.ClusterName,
		"service_account_name":      stack.ScannerSA,
		"service_account_namespace": stack.ScannerNamespace,
		"kubernetes_host":           st.Kube.URL,
	}
	for k, v := range want {
		if sec.Data[k] != v {
			t.Errorf("data.%s = %q, want %q", k, sec.Data[k], v)
		}
	}
	if strings.TrimSpace(sec.Data["kubernetes_ca_cert"]) != strings.TrimSpace(string(st.Kube.PKI.CAPEM)) {
		t.Errorf("data.kubernetes_ca_cert is not the cluster CA")
	}
	token := sec.Data["service_account_token"]
	exp, err := time.Parse(time.RFC3339, sec.Data["expires_at"])
	if err != nil {
		t.Errorf("expires_at %q: %v", sec.Data["expires_at"], err)
	} else if d := time.Until(exp); d < 14*time.Minute || d > 15*time.Minute+5*time.Second {
		t.Errorf("expires_at %s is %s away, want about 15m", exp, d)
	}

	done = step(t, "the token is bound to one labelled Secret and its jti is the credential_id")
	claims := jwtClaims(t, token)
	jti, _ := claims["jti"].(string)
	if got := "JTI=" + jti; jti == "" || got != sec.Data["credential_id"] {
		t.Errorf("credential_id %q, JWT jti gives %q", sec.Data["credential_id"], got)
	}
	kio, _ := claims["kubernetes.io"].(map[string]any)
	boundSecret, _ := kio["secret"].(map[string]any)
	secrets, err := st.ManagedSecrets(testCtx(t, time.Minute), stack.RoleName)
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 1 {
		t.Fatalf("want 1 bound Secret for role %s, have %d", stack.RoleName, len(secrets))
	}
	s := secrets[0]
	if boundSecret["name"] != s.Name || boundSecret["uid"] != string(s.UID) {
		t.Errorf("JWT bound to secret %v, the labelled Secret is %s/%s", boundSecret, s.Name, s.UID)
	}
	if s.Annotations["vault-plugin-scanner/cluster"] != stack.ClusterName {
		t.Errorf("Secret annotation vault-plugin-scanner/cluster = %q", s.Annotations["vault-plugin-scanner/cluster"])
	}
	if _, err := time.Parse(time.RFC3339, s.Annotations["vault-plugin-scanner/expires-at"]); err != nil {
		t.Errorf("Secret annotation vault-plugin-scanner/expires-at %q: %v", s.Annotations["vault-plugin-scanner/expires-at"], err)
	}
	done()

	done = step(t, "write the kubeconfig with mode 0600")
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(sec.Data["kubeconfig"])); err != nil {
		t.Fatal(err)
	}
	assertMode(t, kc, 0o600)
	done()

	done = step(t, "kubectl get pods -n scanner-namespace (allowed)")
	r := kubectl(t, kc, "get", "pods", "-n", stack.ScannerNamespace, "-o", "name")
	if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod {
		t.Fatalf("kubectl get pods -n %s: want exit 0 and pod/scan-target: %s", stack.ScannerNamespace, r)
	}
	// The context's namespace is the service account's namespace.
	r = kubectl(t, kc, "get", "pods", "-o", "name")
	if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod {
		t.Fatalf("kubectl get pods (context namespace): %s", r)
	}
	done()

	done = step(t, "kubectl get pods -n kube-system (forbidden)")
	r = kubectl(t, kc, "get", "pods", "-n", "kube-system")
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, "Forbidden") ||
		!strings.Contains(r.Stderr, "system:serviceaccount:scanner-namespace:scanner-sa") {
		t.Fatalf("kubectl get pods -n kube-system: want non-zero exit and Forbidden for the scanner SA: %s", r)
	}
	done()

	done = step(t, "kubectl auth can-i: exec allowed, delete pods and secrets denied")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "pods", "--subresource=exec"}, "yes"},
		{[]string{"list", "pods"}, "yes"},
		{[]string{"get", "pods/" + stack.TargetPod}, "yes"},
		{[]string{"delete", "pods"}, "no"},
		{[]string{"get", "secrets"}, "no"},
		{[]string{"list", "pods", "--all-namespaces"}, "no"},
	} {
		r = kubectl(t, kc, append([]string{"auth", "can-i"}, c.args...)...)
		if got := strings.TrimSpace(r.Stdout); got != c.want {
			t.Errorf("kubectl auth can-i %v = %q, want %q (%s)", c.args, got, c.want, r)
		}
	}
	done()
}
