// Command demo starts a local etcd, kube-apiserver and Vault with the
// vault-plugin-scanner plugin, and shows a scanner credential end to end:
// issue, use with kubectl (allowed in scanner-namespace, forbidden in
// kube-system), revoke, rejected. It is `make demo`; `-keep` (`make dev`)
// keeps the stack up and prints the environment to use it by hand.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

func main() {
	keep := flag.Bool("keep", false, "keep the stack running after setup and print the environment to use it; stop with Ctrl-C")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := &stack.StderrLogger{}
	s, err := stack.Start(ctx, stack.Options{Log: log})
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: FAILED to start the stack: %v\n", err)
		os.Exit(1)
	}
	if *keep {
		err = keepRunning(ctx, s)
	} else {
		err = runDemo(ctx, s)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo: FAILED: %v\n", err)
		s.DumpLogs(30)
		s.Stop(true)
		os.Exit(1)
	}
	s.Stop(false)
	if !*keep {
		fmt.Println("\ndemo: OK — every step behaved as expected; the stack is stopped.")
	}
}

func keepRunning(ctx context.Context, s *stack.Stack) error {
	if err := s.CreateTargetPod(ctx); err != nil {
		return err
	}
	fmt.Printf(`
The stack is up (directory %s). In another shell:

export VAULT_ADDR=%s
export VAULT_TOKEN=%s
export KUBECONFIG_ADMIN=%s
export KUBE_API=%s
export PATH=%s:%s:$PATH   # the pinned vault and kubectl

vault read scanner/creds/cluster-a
vault read -field=kubeconfig scanner/creds/cluster-a > /tmp/scanner.kubeconfig && chmod 600 /tmp/scanner.kubeconfig
kubectl --kubeconfig /tmp/scanner.kubeconfig get pods
kubectl --kubeconfig "$KUBECONFIG_ADMIN" get secrets -n scanner-namespace -l app.kubernetes.io/managed-by=vault-plugin-scanner

Logs: %v
Press Ctrl-C to stop everything.
`, s.Dir, s.Vault.Addr, s.Vault.RootToken, s.AdminKubeconfig, s.Kube.URL,
		dirOf(s.Tools.Vault), dirOf(s.Tools.Kubectl), s.LogFiles())
	<-ctx.Done()
	fmt.Println("\nstopping…")
	return nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}
