package stack

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// VSO is HashiCorp Vault Secrets Operator, run unmodified out of cluster
// against the first cluster as its admin, with leader election off and its
// metrics and probe listeners on loopback (it registers no webhook, so its
// webhook server never listens).
type VSO struct {
	Bin     string
	CRDs    string // directory of its CustomResourceDefinitions
	Probe   string // http://127.0.0.1:PORT of /healthz and /readyz
	Metrics string // 127.0.0.1:PORT
	Proc    *Process
}

// ResolveVSO takes the operator binary and its CRD directory from VSO_BIN
// and VSO_CRDS or, when either is unset, from scripts/build-tools.sh (which
// builds it on first use).
func ResolveVSO(ctx context.Context, log Logger) (bin, crds string, err error) {
	return resolveConsumer(ctx, log, "VSO_BIN", "VSO_CRDS")
}

// StartVSO installs the operator's CRDs in the first cluster (server-side
// apply: idempotent, and they are too large for the client-side apply
// annotation), waits until they are established, starts the operator with
// the admin kubeconfig and waits, at most until ctx ends or a minute passes,
// for its /readyz. Its log is <Dir>/consumers/vso/vso.log, which the stack's
// LogFiles lists.
func (s *Stack) StartVSO(ctx context.Context, bin, crds, operatorNamespace string) (*VSO, error) {
	res, err := s.KubectlAdmin(ctx, "apply", "--server-side", "--force-conflicts", "-f", crds)
	if err := cmdErr("kubectl apply --server-side -f "+crds, res, err); err != nil {
		return nil, err
	}
	res, err = s.KubectlAdmin(ctx, "wait", "--for=condition=established", "--timeout=60s", "-f", crds)
	if err := cmdErr("kubectl wait established -f "+crds, res, err); err != nil {
		return nil, err
	}
	probePort, err := FreePort()
	if err != nil {
		return nil, err
	}
	metricsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	v := &VSO{
		Bin:     bin,
		CRDs:    crds,
		Probe:   fmt.Sprintf("http://127.0.0.1:%d", probePort),
		Metrics: fmt.Sprintf("127.0.0.1:%d", metricsPort),
	}
	dir := filepath.Join(s.Dir, "consumers", "vso")
	env := []string{
		"KUBECONFIG=" + s.AdminKubeconfig,
		"OPERATOR_NAMESPACE=" + operatorNamespace,
		// Its own HOME, so nothing under the developer's home is read.
		"HOME=" + dir,
	}
	v.Proc, err = StartProcess("vault-secrets-operator", filepath.Join(dir, "vso.log"), env, bin,
		"--leader-elect=false",
		"--metrics-bind-address="+v.Metrics,
		"--health-probe-bind-address="+strings.TrimPrefix(v.Probe, "http://"),
		"--zap-log-level=debug",
	)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 5 * time.Second}
	_, err = Poll(ctx, time.Minute, 250*time.Millisecond, func() (bool, error) {
		if exited, werr := v.Proc.Exited(); exited {
			return false, Permanent(fmt.Errorf("vault-secrets-operator exited: %v", werr))
		}
		resp, err := client.Get(v.Probe + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		v.Stop()
		return nil, fmt.Errorf("vault-secrets-operator not ready: %w\n%s", err, v.Proc.Tail(40))
	}
	return v, nil
}

// Stop ends the operator: SIGTERM, then SIGKILL after 15 s.
func (v *VSO) Stop() {
	if v != nil && v.Proc != nil {
		v.Proc.Stop(15 * time.Second)
	}
}
