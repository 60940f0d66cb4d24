package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// runDemo runs the steps; any unexpected outcome is an error.
func runDemo(ctx context.Context, s *stack.Stack) error {
	if err := s.CreateTargetPod(ctx); err != nil {
		return err
	}
	credsPath := stack.Mount + "/creds/" + stack.RoleName

	banner("1. Issue a credential")
	show("vault read " + credsPath)
	res, err := s.Vault.CLI(ctx, "read", "-format=json", credsPath)
	if err := expectExit0("vault read", res, err); err != nil {
		return err
	}
	sec, err := stack.ParseCLISecret(res.Stdout)
	if err != nil {
		return err
	}
	printTable(sec.LeaseID, sec.LeaseDuration, sec.Renewable, sec.Data)
	token := sec.Data["service_account_token"]
	if token == "" || sec.LeaseID == "" {
		return fmt.Errorf("vault read returned no token or no lease")
	}

	banner("2. Write the kubeconfig (mode 0600)")
	kc := filepath.Join(s.Dir, "scanner.kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(sec.Data["kubeconfig"])); err != nil {
		return err
	}
	fi, err := os.Stat(kc)
	if err != nil {
		return err
	}
	fmt.Printf("%s  %s\n", fi.Mode().Perm(), kc)
	if fi.Mode().Perm() != 0o600 {
		return fmt.Errorf("kubeconfig mode %04o, want 0600", fi.Mode().Perm())
	}

	banner("3. Use it: allowed in scanner-namespace")
	show("kubectl --kubeconfig " + kc + " get pods -n scanner-namespace")
	res, err = s.Kubectl(ctx, kc, "get", "pods", "-n", stack.ScannerNamespace)
	if err := expectExit0("kubectl get pods -n scanner-namespace", res, err); err != nil {
		return err
	}
	fmt.Print(res.Stdout)
	if !strings.Contains(res.Stdout, stack.TargetPod) {
		return fmt.Errorf("pod %s not listed", stack.TargetPod)
	}

	banner("4. Use it: forbidden in kube-system")
	show("kubectl --kubeconfig " + kc + " get pods -n kube-system")
	res, err = s.Kubectl(ctx, kc, "get", "pods", "-n", "kube-system")
	if err != nil {
		return err
	}
	fmt.Print(res.Stderr)
	fmt.Printf("(exit %d)\n", res.ExitCode)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "Forbidden") {
		return fmt.Errorf("kube-system: want Forbidden and a non-zero exit: %s", res)
	}

	banner("5. Revoke the lease")
	show("vault lease revoke " + sec.LeaseID)
	start := time.Now()
	res, err = s.Vault.CLI(ctx, "lease", "revoke", sec.LeaseID)
	if err := expectExit0("vault lease revoke", res, err); err != nil {
		return err
	}
	fmt.Print(res.Stdout)

	banner("6. The token is rejected")
	fmt.Println("waiting for the API server to reject the token (its bound Secret is deleted; ~10 s token cache)…")
	_, err = stack.Poll(ctx, 30*time.Second, 500*time.Millisecond, func() (bool, error) {
		code, err := s.TokenStatus(ctx, token)
		return code == http.StatusUnauthorized, err
	})
	if err != nil {
		return fmt.Errorf("token not rejected within 30 s of the revoke: %w", err)
	}
	fmt.Printf("rejected %.1f s after the revoke\n", time.Since(start).Seconds())
	show("kubectl --kubeconfig " + kc + " get pods -n scanner-namespace")
	res, err = s.Kubectl(ctx, kc, "get", "pods", "-n", stack.ScannerNamespace)
	if err != nil {
		return err
	}
	fmt.Print(res.Stderr)
	fmt.Printf("(exit %d)\n", res.ExitCode)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "Unauthorized") {
		return fmt.Errorf("after revoke: want Unauthorized: %s", res)
	}
	left, err := s.ManagedSecrets(ctx, "")
	if err != nil {
		return err
	}
	fmt.Printf("bound Secrets left in %s: %d\n", stack.ScannerNamespace, len(left))
	if len(left) != 0 {
		return fmt.Errorf("%d bound Secrets left after revoke", len(left))
	}
	banner("7. Stop everything")
	return nil
}

func banner(s string) { fmt.Printf("\n=== %s\n", s) }
func show(cmd string) { fmt.Printf("$ %s\n", cmd) }

func expectExit0(what string, res stack.CmdResult, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("%s: %s", what, res)
	}
	return nil
}

// printTable prints a `vault read` style table, truncating secret and long
// values so the demo output shows their shape, not their content.
func printTable(leaseID string, leaseDuration int, renewable bool, data map[string]string) {
	rows := [][2]string{
		{"lease_id", leaseID},
		{"lease_duration", (time.Duration(leaseDuration) * time.Second).String()},
		{"lease_renewable", fmt.Sprint(renewable)},
	}
	var keys []string
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rows = append(rows, [2]string{k, truncate(data[k], 48)})
	}
	fmt.Printf("%-26s %s\n%-26s %s\n", "Key", "Value", "---", "-----")
	for _, r := range rows {
		fmt.Printf("%-26s %s\n", r[0], r[1])
	}
}

func truncate(v string, n int) string {
	one := strings.ReplaceAll(strings.TrimSpace(v), "\n", "⏎")
	if len([]rune(one)) <= n {
		return one
	}
	return string([]rune(one)[:n]) + fmt.Sprintf("… (%d chars)", len(v))
}
