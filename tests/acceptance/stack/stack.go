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

// Stack is a running etcd + kube-apiserver + Vault.
type Stack struct {
	Dir      string
	RepoRoot string
	Tools    Tools
	Plugin   Plugin

	Etcd  *Etcd
	Kube  *KubeAPIServer
	Vault *Vault

	// AdminKubeconfig is a kubeconfig file for the admin token.
	AdminKubeconfig string
	// TokenRequesterJWT is the plugin's credential
	// (`kubectl create token vault-plugin-scanner`), set by Setup.
	TokenRequesterJWT string

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

	t := time.Now()
	if s.Etcd, err = startEtcd(ctx, s.Tools.Etcd, filepath.Join(s.Dir, "etcd")); err != nil {
		return s, err
	}
	s.log.Logf("stack: etcd ready at %s (%s)", s.Etcd.ClientURL, since(t))

	t = time.Now()
	if s.Kube, err = startKubeAPIServer(ctx, s.Tools.KubeAPIServer, filepath.Join(s.Dir, "kube"), s.Etcd.ClientURL); err != nil {
		return s, err
	}
	s.AdminKubeconfig = filepath.Join(s.Dir, "kube", "admin.kubeconfig")
	if err = s.Kube.WriteKubeconfig(s.AdminKubeconfig, "admin", s.Kube.AdminToken, "default"); err != nil {
		return s, err
	}
	s.log.Logf("stack: kube-apiserver ready at %s (%s)", s.Kube.URL, since(t))

	t = time.Now()
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
	if s.Kube != nil && s.Kube.Proc != nil {
		s.Kube.Proc.Stop(10 * time.Second)
	}
	if s.Etcd != nil && s.Etcd.Proc != nil {
		s.Etcd.Proc.Stop(10 * time.Second)
	}
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
	for _, p := range []string{
		filepath.Join(s.Dir, "etcd", "etcd.log"),
		filepath.Join(s.Dir, "kube", "kube-apiserver.log"),
		filepath.Join(s.Dir, "kube", "audit.log"),
		filepath.Join(s.Dir, "vault", "vault.log"),
		filepath.Join(s.Dir, "vault", "audit.log"),
	} {
		if fileExists(p) {
			out = append(out, p)
		}
	}
	return out
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
