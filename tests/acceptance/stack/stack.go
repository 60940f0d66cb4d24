// Package stack runs a local etcd, kube-apiserver and Vault server on
// loopback, registers the vault-plugin-scanner plugin and configures it, for
// acceptance tests, the demo and benchmarks.
package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Options configure Start.
type Options struct {
	Log Logger // default: StderrLogger
	// Tools and Plugin default to ResolveTools / ResolvePlugin.
	Tools  *Tools
	Plugin *Plugin
	// Dir is the base directory; default a new temp dir.
	Dir string
	// NoSetup only starts the processes (no manifests, no plugin).
	NoSetup bool
	// VaultStorage is "file" (the default: simple, restartable) or "raft"
	// (single-node Integrated Storage, Vault's recommended production storage).
	VaultStorage string
}

// Stack is a running etcd + kube-apiserver + Vault, and on demand a second,
// independent cluster (StartSecond).
type Stack struct {
	Dir      string
	RepoRoot string
	Tools    Tools
	Plugin   Plugin

	// First is the cluster Setup configures as clusters/cluster-a. Etcd,
	// Kube, AdminKubeconfig and TokenRequesterJWT are its fields.
	First *KubeCluster
	Etcd  *Etcd
	Kube  *KubeAPIServer
	Vault *Vault

	// AdminKubeconfig is a kubeconfig file for the admin token.
	AdminKubeconfig string
	// TokenRequesterJWT is the plugin's credential
	// (`kubectl create token vault-plugin-scanner`), set by Setup.
	TokenRequesterJWT string

	// Second is the second cluster once StartSecond succeeded: its own
	// etcd, API server, serving CA and service-account signing key, on
	// other ports, with the deploy/ manifests applied and its own
	// token-requester JWT. Nothing in Vault points at it.
	Second *KubeCluster

	secondOnce sync.Once
	secondErr  error

	// extra are the clusters StartExtraCluster started, by name.
	extraMu sync.Mutex
	extra   map[string]*KubeCluster

	log     Logger
	started time.Time
}

// Start starts etcd, kube-apiserver and Vault (initialised and unsealed), and
// unless opts.NoSetup runs Setup. On error everything started is stopped and
// the logs are kept (their paths are in the error).
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	if opts.Log == nil {
		opts.Log = &StderrLogger{}
	}
	s = &Stack{log: opts.Log, started: time.Now()}
	defer func() {
		if err != nil {
			s.DumpLogs(40)
			s.Stop(true)
			s = nil
		}
	}()
	if root, rerr := RepoRoot(); rerr == nil {
		s.RepoRoot = root
	}
	if opts.Tools != nil {
		s.Tools = *opts.Tools
	} else if s.Tools, err = ResolveTools(ctx, s.log); err != nil {
		return s, err
	}
	if !opts.NoSetup {
		if opts.Plugin != nil {
			s.Plugin = *opts.Plugin
		} else if s.Plugin, err = ResolvePlugin(); err != nil {
			return s, err
		}
	}
	s.Dir = opts.Dir
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "vault-plugin-scanner-stack-"); err != nil {
			return s, err
		}
	}
	s.log.Logf("stack: directory %s", s.Dir)

	if s.First, err = startCluster(ctx, s.log, s.Tools, "first", s.Dir); err != nil {
		return s, err
	}
	s.Etcd, s.Kube, s.AdminKubeconfig = s.First.Etcd, s.First.Kube, s.First.AdminKubeconfig

	t := time.Now()
	if s.Vault, err = newVault(s.Tools.Vault, filepath.Join(s.Dir, "vault"), opts.VaultStorage, s.log); err != nil {
		return s, err
	}
	if err = s.Vault.start(ctx); err != nil {
		return s, err
	}
	if err = s.Vault.initAndUnseal(ctx); err != nil {
		return s, err
	}
	s.log.Logf("stack: vault initialised and unsealed at %s (%s)", s.Vault.Addr, since(t))

	if !opts.NoSetup {
		if err = s.Setup(ctx); err != nil {
			return s, err
		}
	}
	s.log.Logf("stack: up in %s", since(s.started))
	return s, nil
}

// Stop stops Vault, kube-apiserver and etcd (in that order). With keepLogs
// the directory is kept and the log paths are printed; otherwise it is
// removed.
func (s *Stack) Stop(keepLogs bool) {
	if s == nil {
		return
	}
	t := time.Now()
	if s.Vault != nil {
		s.Vault.Stop()
	}
	for _, c := range s.extraClusters() {
		c.Stop() // before the first cluster's etcd, which they use
	}
	s.Second.Stop()
	s.First.Stop()
	if s.Dir == "" {
		return
	}
	if keepLogs {
		s.log.Logf("stack: stopped in %s; logs kept:", since(t))
		for _, p := range s.LogFiles() {
			s.log.Logf("  %s", p)
		}
		return
	}
	if err := os.RemoveAll(s.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Logf("stack: removing %s: %v", s.Dir, err)
	}
	s.log.Logf("stack: stopped in %s, directory removed", since(t))
}

// LogFiles lists the log files of the stack's processes (those that exist).
func (s *Stack) LogFiles() []string {
	var out []string
	if s.First != nil {
		out = append(out, s.First.LogFiles()...)
	}
	for _, p := range []string{
		filepath.Join(s.Dir, "vault", "vault.log"),
		filepath.Join(s.Dir, "vault", "audit.log"),
		s.externalSecretsLog(),
	} {
		if fileExists(p) {
			out = append(out, p)
		}
	}
	if s.Second != nil {
		out = append(out, s.Second.LogFiles()...)
	}
	for _, c := range s.extraClusters() {
		out = append(out, c.LogFiles()...)
	}
	// Consumers a test starts (operators) log under consumers/<name>/.
	consumerLogs, _ := filepath.Glob(filepath.Join(s.Dir, "consumers", "*", "*.log"))
	return append(out, consumerLogs...)
}

// StartSecond starts the second cluster (once per Stack; later calls
// return the first call's result) under <Dir>/second, applies the shipped
// manifests and creates its token-requester JWT. Stop stops it.
func (s *Stack) StartSecond(ctx context.Context) (*KubeCluster, error) {
	s.secondOnce.Do(func() {
		t := time.Now()
		c, err := startCluster(ctx, s.log, s.Tools, "second", filepath.Join(s.Dir, "second"))
		if err == nil {
			if err = c.setup(ctx, s.ManifestPaths()); err != nil {
				c.Stop()
			}
		}
		if err != nil {
			s.secondErr = fmt.Errorf("second cluster: %w", err)
			return
		}
		s.Second = c
		s.log.Logf("stack: second cluster up at %s in %s", c.Kube.URL, since(t))
	})
	return s.Second, s.secondErr
}

// DumpLogs logs the last n lines of the process logs (not the audit logs).
func (s *Stack) DumpLogs(n int) {
	if s == nil || s.Dir == "" {
		return
	}
	for _, p := range s.LogFiles() {
		if filepath.Base(p) == "audit.log" {
			continue
		}
		s.log.Logf("---- last %d lines of %s ----\n%s", n, p, TailFile(p, n))
	}
}

// Logf logs through the stack's logger.
func (s *Stack) Logf(format string, args ...any) { s.log.Logf(format, args...) }

func since(t time.Time) string { return time.Since(t).Round(time.Millisecond).String() }

// errorf wraps a failed command's output into an error.
func cmdErr(what string, res CmdResult, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", what, err, res)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("%s: %s", what, res)
	}
	return nil
}
