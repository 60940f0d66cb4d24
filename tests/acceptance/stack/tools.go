package stack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Tools are the binaries the stack runs.
type Tools struct {
	Vault         string // VAULT_BIN
	KubeAPIServer string // KUBE_APISERVER_BIN
	Kubectl       string // KUBECTL_BIN
	Etcd          string // ETCD_BIN
}

var toolEnv = []struct {
	name string
	get  func(*Tools) *string
}{
	{"VAULT_BIN", func(t *Tools) *string { return &t.Vault }},
	{"KUBE_APISERVER_BIN", func(t *Tools) *string { return &t.KubeAPIServer }},
	{"KUBECTL_BIN", func(t *Tools) *string { return &t.Kubectl }},
	{"ETCD_BIN", func(t *Tools) *string { return &t.Etcd }},
}

// RepoRoot finds the repository root (the directory holding
// scripts/build-tools.sh or deploy/) from the working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(dir, "deploy", "token-requester.yaml")) || fileExists(filepath.Join(dir, "scripts", "build-tools.sh")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repository root (with deploy/ or scripts/build-tools.sh) not found above the working directory")
		}
		dir = parent
	}
}

// ResolveTools takes tool paths from VAULT_BIN, KUBE_APISERVER_BIN,
// KUBECTL_BIN and ETCD_BIN. If any is unset it runs scripts/build-tools.sh
// (which builds the pinned versions into a cache the first time: 20-55 min on 2 cores)
// and reads its KEY=VALUE lines. Every resolved path must be an executable.
func ResolveTools(ctx context.Context, log Logger) (Tools, error) {
	var t Tools
	missing := false
	for _, e := range toolEnv {
		*e.get(&t) = os.Getenv(e.name)
		if *e.get(&t) == "" {
			missing = true
		}
	}
	if missing {
		root, err := RepoRoot()
		if err != nil {
			return t, err
		}
		script := filepath.Join(root, "scripts", "build-tools.sh")
		if !fileExists(script) {
			return t, fmt.Errorf("tool paths not set (VAULT_BIN, KUBE_APISERVER_BIN, KUBECTL_BIN, ETCD_BIN) and %s does not exist", script)
		}
		log.Logf("tools: running %s (builds the pinned tools on first use: 20-55 min on 2 cores, progress every 30 s)", script)
		start := time.Now()
		vals, err := runBuildTools(ctx)
		if err != nil {
			return t, err
		}
		for _, e := range toolEnv {
			if *e.get(&t) == "" {
				*e.get(&t) = vals[e.name]
			}
		}
		log.Logf("tools: ready after %s", time.Since(start).Round(time.Second))
	}
	for _, e := range toolEnv {
		p := *e.get(&t)
		if p == "" {
			return t, fmt.Errorf("%s: no path (not in the environment nor printed by scripts/build-tools.sh)", e.name)
		}
		st, err := os.Stat(p)
		if err != nil {
			return t, fmt.Errorf("%s=%s: %w", e.name, p, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return t, fmt.Errorf("%s=%s: not an executable file", e.name, p)
		}
	}
	return t, nil
}

// Plugin is the plugin binary and the version it reports.
type Plugin struct {
	Binary  string // PLUGIN_BINARY, default <repo>/bin/vault-plugin-scanner
	Version string // PLUGIN_VERSION, default v0.1.0
}

// ResolvePlugin reads PLUGIN_BINARY and PLUGIN_VERSION with their defaults.
// A missing binary is an error (run `make build` in the repository root).
func ResolvePlugin() (Plugin, error) {
	p := Plugin{Binary: os.Getenv("PLUGIN_BINARY"), Version: os.Getenv("PLUGIN_VERSION")}
	if p.Version == "" {
		p.Version = "v0.1.0"
	}
	if p.Binary == "" {
		root, err := RepoRoot()
		if err != nil {
			return p, err
		}
		p.Binary = filepath.Join(root, "bin", "vault-plugin-scanner")
	}
	abs, err := filepath.Abs(p.Binary)
	if err != nil {
		return p, err
	}
	p.Binary = abs
	if !fileExists(p.Binary) {
		return p, fmt.Errorf("plugin binary %s does not exist: run `make build` in the repository root (or set PLUGIN_BINARY)", p.Binary)
	}
	return p, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runBuildTools runs scripts/build-tools.sh (which builds what is not
// cached, its progress on stderr) and returns the NAME=path lines it prints.
func runBuildTools(ctx context.Context) (map[string]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	script := filepath.Join(root, "scripts", "build-tools.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w", script, err)
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "))
		if k, v, ok := strings.Cut(line, "="); ok {
			vals[k] = strings.Trim(v, `"'`)
		}
	}
	return vals, nil
}

// resolveConsumer returns a consumer's binary and its CRD directory from
// the environment variables binVar and dirVar or, when either is unset,
// from what scripts/build-tools.sh prints.
func resolveConsumer(ctx context.Context, log Logger, binVar, dirVar string) (bin, dir string, err error) {
	bin, dir = os.Getenv(binVar), os.Getenv(dirVar)
	if bin == "" || dir == "" {
		log.Logf("tools: %s or %s unset: running scripts/build-tools.sh", binVar, dirVar)
		vals, err := runBuildTools(ctx)
		if err != nil {
			return "", "", fmt.Errorf("%s or %s unset, and %w", binVar, dirVar, err)
		}
		bin, dir = vals[binVar], vals[dirVar]
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("%s=%q: not an executable file (%v)", binVar, bin, err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", "", fmt.Errorf("%s=%q: not a directory (%v)", dirVar, dir, err)
	}
	return bin, dir, nil
}
