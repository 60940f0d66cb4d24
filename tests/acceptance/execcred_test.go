package acceptance

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// leaseTTL looks a lease up and returns its remaining TTL.
func leaseTTL(t *testing.T, leaseID string) time.Duration {
	t.Helper()
	sec, err := vaultClient(t).Logical().WriteWithContext(testCtx(t, 30*time.Second), "sys/leases/lookup", map[string]any{"lease_id": leaseID})
	if err != nil || sec == nil {
		t.Fatalf("lease lookup %s: %v", leaseID, err)
	}
	n, ok := sec.Data["ttl"].(json.Number)
	if !ok {
		t.Fatalf("lease %s: ttl %v", leaseID, sec.Data["ttl"])
	}
	s, err := n.Int64()
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(s) * time.Second
}

// A real kubectl with the kubeconfig/<role> output and only VAULT_ADDR,
// a token that may read creds/<role>, and the vault binary on PATH: each
// invocation runs `vault read -field=exec_credential` once and so leaves
// exactly one new lease; the credential lists pods in the role's namespace
// and is forbidden in kube-system. VAULT_FORMAT=json in the environment
// does not break the plugin's output.
func TestExecCredentialKubectl(t *testing.T) {
	t.Parallel()
	role := "execcred-kubectl"
	token := execRoleClientToken(t, role)

	done := step(t, "vault read -field=kubeconfig %s/kubeconfig/%s ttl=5m", stack.Mount, role)
	kc := writeExecKubeconfig(t, role, "ttl=5m")
	if leases := roleLeases(t, role); len(leases) != 0 {
		t.Fatalf("reading kubeconfig/ left leases: %v", leases)
	}
	if n := secretCount(t, role); n != 0 {
		t.Fatalf("reading kubeconfig/ created %d bound Secrets", n)
	}
	done()

	env := execEnv(t, token)
	cases := []struct {
		name string
		args []string
		ok   bool
		want string
	}{
		{"get pods -n " + stack.ScannerNamespace, []string{"get", "pods", "-n", stack.ScannerNamespace, "-o", "name"}, true, "pod/" + stack.TargetPod},
		{"get pods (the context's namespace)", []string{"get", "pods", "-o", "name"}, true, "pod/" + stack.TargetPod},
		{"get pods -n kube-system", []string{"get", "pods", "-n", "kube-system"}, false, "system:serviceaccount:" + stack.ScannerNamespace + ":" + stack.ScannerSA},
	}
	seen := roleLeases(t, role)
	for _, c := range cases {
		done := step(t, "kubectl %s", c.name)
		before := roleLeases(t, role)
		r := kubectlExec(t, env, kc, c.args...)
		switch {
		case c.ok && (r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != c.want):
			t.Fatalf("kubectl %v: want exit 0 and %s: %s", c.args, c.want, r)
		case !c.ok && (r.ExitCode == 0 || !strings.Contains(r.Stderr, "Forbidden") || !strings.Contains(r.Stderr, c.want)):
			t.Fatalf("kubectl %v: want Forbidden for %s: %s", c.args, c.want, r)
		}
		after := roleLeases(t, role)
		added := newLeases(before, after)
		if len(added) != 1 || len(after) != len(before)+1 {
			t.Fatalf("kubectl %v: leases %d -> %d, new %v; want exactly one new lease", c.args, len(before), len(after), added)
		}
		if slices.Contains(seen, added[0]) {
			t.Fatalf("lease %s seen before", added[0])
		}
		seen = append(seen, added[0])
		// ttl=5m passed through the kubeconfig to creds/.
		if ttl := leaseTTL(t, added[0]); ttl > 5*time.Minute || ttl < 4*time.Minute {
			t.Errorf("lease %s TTL %s, want about 5m (the kubeconfig's ttl=5m)", added[0], ttl)
		}
		t.Logf("kubectl took %s; new lease %s", r.Duration.Round(time.Millisecond), added[0])
		done()
	}
	if n := secretCount(t, role); n != len(cases) {
		t.Errorf("bound Secrets %d, want one per kubectl run (%d)", n, len(cases))
	}
}

// A long-running client-go program (cmd/execloop) with the kubeconfig/
// output lists pods every 3 s for 3 minutes against a role whose leases
// last one minute: client-go runs the exec plugin again when each
// credential's expirationTimestamp passes, so no request fails while
// Vault expires the old leases (and the plugin deletes their Secrets).
func TestExecCredentialLongRunningClient(t *testing.T) {
	t.Parallel()
	ensureTargetPod(t)
	role := "execcred-loop"
	writeRole(t, role, "ttl=1m")
	revokeRoleLeasesAtEnd(t, role)
	token := execClientToken(t, role)
	kc := writeExecKubeconfig(t, role)

	done := step(t, "go build ./cmd/execloop")
	bin := buildExecLoop(t)
	done()

	const runFor, interval = 3 * time.Minute, 3 * time.Second
	done = step(t, "execloop: list pods every %s for %s, leases of 1m", interval, runFor)
	var (
		wg  sync.WaitGroup
		res stack.CmdResult
		err error
	)
	ctx := testCtx(t, runFor+2*time.Minute)
	env := execEnv(t, token)
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, err = stack.Run(ctx, env, "", bin, "-kubeconfig", kc,
			"-interval", interval.String(), "-duration", runFor.String())
	}()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	// Watch the role's leases and Secrets while the program runs.
	firstSeen := map[string]time.Duration{}
	goneAt := map[string]time.Duration{}
	maxLive, maxSecrets := 0, 0
	start := time.Now()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
watch:
	for {
		select {
		case <-finished:
			break watch
		case <-tick.C:
		}
		live, lerr := listLeases(ctx, vaultClient(t), stack.Mount, role)
		secrets, serr := st.ManagedSecrets(ctx, role)
		if lerr != nil || serr != nil {
			t.Logf("watch: %v %v", lerr, serr)
			continue
		}
		now := time.Since(start).Round(100 * time.Millisecond)
		for _, id := range live {
			if _, ok := firstSeen[id]; !ok {
				firstSeen[id] = now
			}
		}
		for id := range firstSeen {
			if _, gone := goneAt[id]; !gone && !slices.Contains(live, id) {
				goneAt[id] = now
			}
		}
		maxLive, maxSecrets = max(maxLive, len(live)), max(maxSecrets, len(secrets))
	}
	done()

	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	var oks, errs []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "ok "):
			oks = append(oks, l)
		case l != "":
			errs = append(errs, l)
		}
	}
	var timeline []string
	for id, at := range firstSeen {
		gone := "live at the end"
		if g, ok := goneAt[id]; ok {
			gone = "gone at " + g.String()
		}
		timeline = append(timeline, fmt.Sprintf("%s: seen at %s, %s", id[strings.LastIndex(id, "/")+1:], at, gone))
	}
	slices.Sort(timeline)
	t.Logf("execloop: exit %d, %d ok, %d errors, in %s; leases:\n  %s", res.ExitCode, len(oks), len(errs), res.Duration.Round(time.Second), strings.Join(timeline, "\n  "))
	if err != nil || res.ExitCode != 0 || len(errs) != 0 {
		t.Fatalf("execloop failed (%v): %d errors:\n%s\nstderr:\n%s", err, len(errs), strings.Join(errs, "\n"), res.Stderr)
	}
	if want := int(runFor/interval) - 2; len(oks) < want {
		t.Errorf("only %d successful lists, want at least %d", len(oks), want)
	}
	// A new lease about every minute, the old ones expired and revoked
	// while the client kept working.
	if len(firstSeen) < 3 || len(goneAt) < 2 {
		t.Errorf("leases seen %d, expired during the run %d; want at least 3 and 2", len(firstSeen), len(goneAt))
	}
	if maxLive > 2 || maxSecrets > 2 {
		t.Errorf("at most %d live leases and %d bound Secrets at once; want at most 2 (expired ones revoked)", maxLive, maxSecrets)
	}
}

// kubeconfig/<role> exec_command=bao: the kubeconfig runs bao (a stand-in
// that, like OpenBao's CLI, reads BAO_ADDR and BAO_TOKEN) with the same
// arguments and BAO_NAMESPACE pinned empty (the mount is in the root
// namespace); kubectl works with only BAO_* in its environment and no vault
// on PATH, one lease per run.
func TestExecCredentialBaoCommand(t *testing.T) {
	t.Parallel()
	role := "execcred-bao"
	token := execRoleClientToken(t, role)

	done := step(t, "vault read -field=kubeconfig %s/kubeconfig/%s exec_command=bao", stack.Mount, role)
	kc := writeExecKubeconfig(t, role, "exec_command=bao")
	raw, err := os.ReadFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"command: bao", "name: BAO_NAMESPACE", "BAO_ADDR"} {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("kubeconfig lacks %q:\n%s", want, raw)
		}
	}
	done()

	done = step(t, "kubectl get pods with only BAO_ADDR and BAO_TOKEN")
	dir, log := baoStandIn(t)
	if _, err := exec.LookPath(filepath.Join(dir, "vault")); err == nil {
		t.Fatal("the stand-in's directory holds vault")
	}
	before := roleLeases(t, role)
	r := kubectlExec(t, baoEnv(t, token, dir), kc, "get", "pods", "-o", "name")
	if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod {
		t.Fatalf("kubectl get pods: %s", r)
	}
	if added := newLeases(before, roleLeases(t, role)); len(added) != 1 {
		t.Fatalf("new leases %v, want one", added)
	}
	got, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("bao never ran: %v", err)
	}
	want := "args=read -format=table -field=exec_credential " + stack.Mount + "/creds/" + role + " namespace_set=yes namespace=\n"
	if string(got) != want {
		t.Errorf("bao ran as\n%q\nwant\n%q", got, want)
	}
	done()
}
