package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ExternalSecrets is the external-secrets operator, built unmodified from
// its module by scripts/build-tools.sh, run out of cluster against the
// first cluster as its admin: no metrics, probe or webhook listener, no
// leader election, and only the namespaced ExternalSecret, SecretStore and
// generator controllers.
type ExternalSecrets struct {
	Proc    *Process
	LogPath string
}

// externalSecretsLog is where the operator logs, under the stack's
// directory, so DumpLogs shows it when a test fails.
func (s *Stack) externalSecretsLog() string {
	return filepath.Join(s.Dir, "external-secrets", "external-secrets.log")
}

// ResolveExternalSecrets reads EXTERNAL_SECRETS_BIN and
// EXTERNAL_SECRETS_CRDS; when either is unset it takes both from what
// scripts/build-tools.sh prints (building them on first use).
func ResolveExternalSecrets(ctx context.Context) (bin, crdDir string, err error) {
	bin, crdDir = os.Getenv("EXTERNAL_SECRETS_BIN"), os.Getenv("EXTERNAL_SECRETS_CRDS")
	if bin == "" || crdDir == "" {
		vals, err := buildToolsOutput(ctx)
		if err != nil {
			return "", "", fmt.Errorf("EXTERNAL_SECRETS_BIN or EXTERNAL_SECRETS_CRDS unset, and %w", err)
		}
		bin, crdDir = vals["EXTERNAL_SECRETS_BIN"], vals["EXTERNAL_SECRETS_CRDS"]
	}
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("EXTERNAL_SECRETS_BIN=%s: not an executable file (%v)", bin, err)
	}
	if fi, err := os.Stat(crdDir); err != nil || !fi.IsDir() {
		return "", "", fmt.Errorf("EXTERNAL_SECRETS_CRDS=%s: not a directory (%v)", crdDir, err)
	}
	return bin, crdDir, nil
}

// buildToolsOutput runs scripts/build-tools.sh and returns its KEY=VALUE
// lines.
func buildToolsOutput(ctx context.Context) (map[string]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "build-tools.sh"))
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("scripts/build-tools.sh: %w", err)
	}
	vals := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			vals[k] = v
		}
	}
	return vals, nil
}

// StartExternalSecrets installs the CRDs in the first cluster (server-side:
// some are larger than client-side apply's annotation allows), starts the
// operator and waits, at most a minute and a half, until its ExternalSecret
// controller runs workers. On error the operator is stopped.
func (s *Stack) StartExternalSecrets(ctx context.Context, bin, crdDir string) (*ExternalSecrets, error) {
	t := time.Now()
	res, err := s.KubectlAdmin(ctx, "apply", "--server-side", "--force-conflicts", "-f", crdDir)
	if err := cmdErr("kubectl apply external-secrets CRDs", res, err); err != nil {
		return nil, err
	}
	res, err = s.KubectlAdmin(ctx, "wait", "--for=condition=Established", "--timeout=60s", "-f", crdDir)
	if err := cmdErr("kubectl wait for the external-secrets CRDs", res, err); err != nil {
		return nil, err
	}
	args := []string{
		"--metrics-addr=0", // 0 turns controller-runtime's metrics server off
		"--enable-leader-election=false",
		"--enable-cluster-store-reconciler=false",
		"--enable-cluster-external-secret-reconciler=false",
		"--enable-push-secret-reconciler=false",
		"--enable-cluster-push-secret-reconciler=false",
	}
	env := []string{"KUBECONFIG=" + s.AdminKubeconfig, "HOME=" + filepath.Dir(s.externalSecretsLog())}
	p, err := StartProcess("external-secrets", s.externalSecretsLog(), env, bin, args...)
	if err != nil {
		return nil, err
	}
	e := &ExternalSecrets{Proc: p, LogPath: p.LogPath}
	_, err = Poll(ctx, 90*time.Second, 250*time.Millisecond, func() (bool, error) {
		if exited, werr := p.Exited(); exited {
			return false, Permanent(fmt.Errorf("external-secrets exited: %v", werr))
		}
		return e.workersStarted(), nil
	})
	if err != nil {
		e.Stop()
		return nil, fmt.Errorf("external-secrets not ready: %w\n%s", err, p.Tail(40))
	}
	s.log.Logf("stack: external-secrets running (pid %d) in %s", p.Pid(), since(t))
	return e, nil
}

// workersStarted reports whether the log says the ExternalSecret
// controller started its workers (controller-runtime's JSON log line).
func (e *ExternalSecrets) workersStarted() bool {
	b, err := os.ReadFile(e.LogPath)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "Starting workers") && strings.Contains(line, `"controller":"externalsecret"`) {
			return true
		}
	}
	return false
}

// Stop stops the operator (SIGTERM, then SIGKILL after 10 s).
func (e *ExternalSecrets) Stop() {
	if e != nil && e.Proc != nil {
		e.Proc.Stop(10 * time.Second)
	}
}

// ListeningAddrs lists the TCP addresses process pid listens on (from the
// socket inodes of its open files and /proc/net/tcp{,6}).
func ListeningAddrs(pid int) ([]string, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			const listen = "0A"
			if len(f) < 10 || f[3] != listen || !inodes[f[9]] {
				continue
			}
			addr, err := procNetAddr(f[1])
			if err != nil {
				return nil, err
			}
			out = append(out, addr)
		}
	}
	return out, nil
}

// procNetAddr decodes /proc/net/tcp's "0100007F:1F90" (little-endian
// 32-bit words) to "127.0.0.1:8080".
func procNetAddr(s string) (string, error) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(hexIP)
	if !ok || err != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", fmt.Errorf("unparsable socket address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return "", fmt.Errorf("unparsable socket port %q", s)
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10)), nil
}
