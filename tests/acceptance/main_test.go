package acceptance

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// st is the stack shared by all tests. Tests that change it (RBAC, Vault
// restart) restore it before they return.
var st *stack.Stack

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	// The parallel tests mostly wait for leases to expire: run them all at
	// once even on 2 cores, unless -parallel was given.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	log := &stack.StderrLogger{Prefix: "stack: "}
	start := time.Now()
	suiteStart = start
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	s, err := stack.Start(ctx, stack.Options{Log: log})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the stack: %v\n", err)
		os.Exit(1)
	}
	st = s
	log.Logf("stack ready in %s; running tests", time.Since(start).Round(time.Millisecond))

	code := m.Run()
	log.Logf("tests finished (exit %d)", code)

	if code == 0 {
		if err := finalCheck(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: final check: %v\n", err)
			code = 1
		}
	}
	if code != 0 {
		s.DumpLogs(60)
	}
	s.Stop(code != 0)
	log.Logf("acceptance suite done in %s (exit %d)", time.Since(start).Round(time.Second), code)
	os.Exit(code)
}

// finalCheck revokes every remaining lease of the mount and checks that no
// bound Secret is left behind.
func finalCheck() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := st.Vault.CLI(ctx, "lease", "revoke", "-prefix", stack.Mount+"/")
	if err != nil || res.ExitCode != 0 {
		return fmt.Errorf("vault lease revoke -prefix %s/: %v\n%s", stack.Mount, err, res)
	}
	st.Logf("final check: vault lease revoke -prefix %s/ took %s", stack.Mount, res.Duration.Round(time.Millisecond))
	var left int
	_, err = stack.Poll(ctx, 30*time.Second, time.Second, func() (bool, error) {
		secs, err := st.ManagedSecrets(ctx, "")
		left = len(secs)
		return err == nil && left == 0, err
	})
	if err != nil {
		return fmt.Errorf("%d bound Secrets left after revoking all leases: %w", left, err)
	}
	if st.Second != nil {
		secs, err := st.Second.ManagedSecrets(ctx, stack.ScannerNamespace, "")
		if err != nil || len(secs) != 0 {
			return fmt.Errorf("second cluster: %d bound Secrets left after revoking all leases (%v)", len(secs), err)
		}
	}
	st.Logf("final check: all leases revoked, 0 bound Secrets left")
	return nil
}
