package acceptance

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// execClientToken creates a Vault token whose only right is reading
// creds/<role> (what the kubeconfig's exec plugin does), revoked with its
// leases when the test ends.
func execClientToken(t *testing.T, role string) string {
	t.Helper()
	policy := "execcred-" + role
	file := filepath.Join(t.TempDir(), policy+".hcl")
	rules := `path "` + stack.Mount + `/creds/` + role + `" { capabilities = ["read"] }` + "\n"
	if err := os.WriteFile(file, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	mustVault(t, "policy", "write", policy, file)
	token := strings.TrimSpace(mustVault(t, "token", "create", "-policy="+policy, "-ttl=30m", "-field=token").Stdout)
	if token == "" {
		t.Fatal("vault token create printed no token")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.Vault.CLI(ctx, "token", "revoke", token); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: vault token revoke: %v %s", err, res)
		}
		if res, err := st.Vault.CLI(ctx, "policy", "delete", policy); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: vault policy delete %s: %v %s", policy, err, res)
		}
	})
	return token
}

// execEnv is the environment of a user's process running with the
// kubeconfig/ output: VAULT_ADDR, the token, the vault binary's directory
// first on PATH, an empty HOME (no ~/.vault-token, no kube cache) and
// VAULT_FORMAT=json, which a plain `vault read -field=` would obey.
func execEnv(t *testing.T, token string) []string {
	t.Helper()
	return []string{
		"VAULT_ADDR=" + st.Vault.Addr,
		"VAULT_TOKEN=" + token,
		"VAULT_FORMAT=json",
		"PATH=" + filepath.Dir(st.Vault.Bin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
	}
}

// writeExecKubeconfig runs `vault read -field=kubeconfig
// scanner/kubeconfig/<role> [params]` as root, checks it names no token,
// and writes it to a file.
func writeExecKubeconfig(t *testing.T, role string, params ...string) string {
	t.Helper()
	out := mustVault(t, append([]string{"read", "-field=kubeconfig", stack.Mount + "/kubeconfig/" + role}, params...)...).Stdout
	if !strings.Contains(out, "exec:") || !strings.Contains(out, "-field=exec_credential") {
		t.Fatalf("kubeconfig/%s has no exec user:\n%s", role, out)
	}
	if strings.Contains(out, "eyJ") || strings.Contains(out, "token:") || strings.Contains(out, st.Vault.RootToken) {
		t.Fatalf("kubeconfig/%s holds a token:\n%s", role, out)
	}
	path := filepath.Join(t.TempDir(), "scan.kubeconfig")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectlExec runs the real kubectl with only the kubeconfig file and env.
func kubectlExec(t *testing.T, env []string, kubeconfig string, args ...string) stack.CmdResult {
	t.Helper()
	res, err := stack.Run(testCtx(t, time.Minute), env, "", st.Tools.Kubectl, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	if err != nil {
		t.Fatalf("kubectl %v: %v", args, err)
	}
	return res
}

// roleLeases lists the live leases of creds/<role>.
func roleLeases(t *testing.T, role string) []string {
	t.Helper()
	ids, err := listLeases(testCtx(t, 30*time.Second), vaultClient(t), stack.Mount, role)
	if err != nil {
		t.Fatalf("list leases of %s: %v", role, err)
	}
	slices.Sort(ids)
	return ids
}

// newLeases is what after holds that before did not.
func newLeases(before, after []string) []string {
	var out []string
	for _, id := range after {
		if !slices.Contains(before, id) {
			out = append(out, id)
		}
	}
	return out
}

// revokeRoleLeasesAtEnd revokes every lease of creds/<role> when the test
// ends and checks no bound Secret of the role is left.
func revokeRoleLeasesAtEnd(t *testing.T, role string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if res, err := st.Vault.CLI(ctx, "lease", "revoke", "-sync", "-prefix", stack.Mount+"/creds/"+role); err != nil || res.ExitCode != 0 {
			t.Errorf("cleanup: vault lease revoke -prefix: %v %s", err, res)
			return
		}
		left := -1
		if _, err := stack.Poll(ctx, 30*time.Second, 500*time.Millisecond, func() (bool, error) {
			secs, err := st.ManagedSecrets(ctx, role)
			left = len(secs)
			return err == nil && left == 0, err
		}); err != nil {
			t.Errorf("cleanup: %d bound Secrets of %s left after revoking its leases: %v", left, role, err)
		}
	})
}

// buildExecLoop builds cmd/execloop into a temporary directory.
func buildExecLoop(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "execloop")
	cmd := exec.CommandContext(testCtx(t, 5*time.Minute), "go", "build", "-o", bin, "./cmd/execloop")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/execloop: %v\n%s", err, out)
	}
	return bin
}

// baoStandIn writes, in a directory of its own, a program named bao that
// stands in for OpenBao's CLI (which cannot be built here): it reads only
// the BAO_* variables, as bao does first, records its arguments and whether
// BAO_NAMESPACE was set in log, and runs the vault binary with them. It
// returns the directory to put on PATH and the log's path.
func baoStandIn(t *testing.T) (dir, log string) {
	t.Helper()
	dir, log = t.TempDir(), filepath.Join(t.TempDir(), "bao.log")
	script := `#!/bin/sh
printf 'args=%s namespace_set=%s namespace=%s\n' "$*" "${BAO_NAMESPACE+yes}" "$BAO_NAMESPACE" >> '` + log + `'
VAULT_ADDR="$BAO_ADDR" VAULT_TOKEN="$BAO_TOKEN" VAULT_NAMESPACE="$BAO_NAMESPACE" exec '` + st.Vault.Bin + `' "$@"
`
	if err := os.WriteFile(filepath.Join(dir, "bao"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, log
}

// baoEnv is execEnv for a bao user: BAO_ADDR and BAO_TOKEN only, and on
// PATH the stand-in's directory, not the vault binary's.
func baoEnv(t *testing.T, token, dir string) []string {
	t.Helper()
	return []string{
		"BAO_ADDR=" + st.Vault.Addr,
		"BAO_TOKEN=" + token,
		"VAULT_FORMAT=json",
		"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
	}
}

// execRoleClientToken prepares an exec-kubeconfig test: the target pod,
// the role (its leases revoked when the test ends) and execClientToken's
// token for it.
func execRoleClientToken(t *testing.T, role string) string {
	t.Helper()
	ensureTargetPod(t)
	writeRole(t, role)
	revokeRoleLeasesAtEnd(t, role)
	return execClientToken(t, role)
}
