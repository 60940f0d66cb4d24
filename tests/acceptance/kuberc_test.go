package acceptance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// writeKuberc writes a kubectl preference file (kubectl.config.k8s.io/v1beta1
// Preference) with the given credential plugin policy lines.
func writeKuberc(t *testing.T, policy string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kuberc")
	doc := "apiVersion: kubectl.config.k8s.io/v1beta1\nkind: Preference\n" + policy
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The stack's kubectl (1.37) with a kuberc (KUBERC=<file>) whose
// credentialPluginPolicy restricts exec plugins: an allowlist naming the
// kubeconfig/ answer's command (by name or by its resolved path) lets it
// run; an allowlist naming only another command, or DenyAll, makes kubectl
// refuse before the command runs, so no lease is issued.
func TestKubercCredentialPluginPolicy(t *testing.T) {
	t.Parallel()
	role := "kuberc"
	token := execRoleClientToken(t, role)
	vaultKC := writeExecKubeconfig(t, role)
	baoKC := writeExecKubeconfig(t, role, "exec_command=bao")
	baoDir, _ := baoStandIn(t)

	cases := []struct {
		name, policy, command string
		// wantErr is kubectl's refusal; "" means the command runs.
		wantErr string
	}{
		{name: "allowlist names vault", command: "vault", policy: "credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- command: vault\n"},
		{name: "allowlist names vault's path", command: "vault", policy: "credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- command: " + st.Vault.Bin + "\n"},
		{name: "allowlist names bao", command: "bao", policy: "credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- command: bao\n"},
		{name: "allowlist names another command", command: "vault", policy: "credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- command: kubelogin\n", wantErr: "is not permitted by the credential plugin allowlist"},
		{name: "allowlist names vault, kubeconfig runs bao", command: "bao", policy: "credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- command: vault\n", wantErr: "is not permitted by the credential plugin allowlist"},
		{name: "DenyAll", command: "vault", policy: "credentialPluginPolicy: DenyAll\n", wantErr: `not allowed: policy set to "DenyAll"`},
	}
	for _, c := range cases {
		done := step(t, "kubectl get pods, %s", c.name)
		kuberc := writeKuberc(t, c.policy)
		kc, env := vaultKC, execEnv(t, token)
		if c.command == "bao" {
			kc, env = baoKC, baoEnv(t, token, baoDir)
		}
		env = append(env, "KUBERC="+kuberc)
		before := roleLeases(t, role)
		r := kubectlExec(t, env, kc, "get", "pods", "-o", "name")
		added := newLeases(before, roleLeases(t, role))
		switch {
		case c.wantErr == "" && (r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod || len(added) != 1):
			t.Fatalf("want the pod listed and one new lease, got %d new leases: %s", len(added), r)
		case c.wantErr != "" && (r.ExitCode == 0 || !strings.Contains(r.Stderr, c.wantErr)):
			t.Fatalf("want kubectl to refuse with %q: %s", c.wantErr, r)
		case c.wantErr != "" && len(added) != 0:
			t.Fatalf("the refused plugin ran: new leases %v", added)
		}
		done()
	}
}
