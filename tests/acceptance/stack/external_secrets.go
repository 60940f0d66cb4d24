package stack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
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
func ResolveExternalSecrets(ctx context.Context, log Logger) (bin, crdDir string, err error) {
	return resolveConsumer(ctx, log, "EXTERNAL_SECRETS_BIN", "EXTERNAL_SECRETS_CRDS")
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
