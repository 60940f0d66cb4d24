package stack

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Issuer is the service-account issuer the API server uses.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// KubeAPIServer is a kube-apiserver on loopback with RBAC, a static admin
// token (group system:masters) and a Metadata-level audit log.
type KubeAPIServer struct {
	URL          string // https://127.0.0.1:PORT
	Port         int
	AdminToken   string
	AuditLogPath string
	PKI          *PKI
	Dir          string
	Proc         *Process
}

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// startKubeAPIServer starts kube-apiserver under dir; extraArgs are appended
// to the standard flags (a later flag wins).
func startKubeAPIServer(ctx context.Context, bin, dir, etcdURL string, extraArgs ...string) (*KubeAPIServer, error) {
	k, err := newKubeAPIServer(dir)
	if err != nil {
		return nil, err
	}
	if err := k.start(ctx, bin, etcdURL, extraArgs...); err != nil {
		return nil, err
	}
	return k, nil
}

// newKubeAPIServer prepares dir (PKI, port, admin token, token and audit
// policy files) without starting anything, so its URL and CA are known
// before it runs.
func newKubeAPIServer(dir string) (*KubeAPIServer, error) {
	pki, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	k := &KubeAPIServer{
		URL:          "https://127.0.0.1:" + strconv.Itoa(port),
		Port:         port,
		AdminToken:   hex.EncodeToString(tok),
		AuditLogPath: filepath.Join(dir, "audit.log"),
		PKI:          pki,
		Dir:          dir,
	}
	if err := os.WriteFile(k.tokenFile(), []byte(k.AdminToken+`,admin,admin-uid,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.policyFile(), []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *KubeAPIServer) tokenFile() string  { return filepath.Join(k.Dir, "tokens.csv") }
func (k *KubeAPIServer) policyFile() string { return filepath.Join(k.Dir, "audit-policy.yaml") }

// start runs kube-apiserver with the standard flags plus extraArgs and
// waits until it is ready.
func (k *KubeAPIServer) start(ctx context.Context, bin, etcdURL string, extraArgs ...string) error {
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// Loopback may not be advertised through the kubernetes Service's
		// endpoints; nothing here needs them.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(k.Port),
		"--tls-cert-file=" + k.PKI.CertFile,
		"--tls-private-key-file=" + k.PKI.KeyFile,
		"--cert-dir=" + filepath.Join(k.Dir, "certs"),
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + k.PKI.SAKeyFile,
		"--service-account-signing-key-file=" + k.PKI.SAKeyFile,
		"--authorization-mode=RBAC",
		"--token-auth-file=" + k.tokenFile(),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--audit-policy-file=" + k.policyFile(),
		"--audit-log-path=" + k.AuditLogPath,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--v=1",
	}
	var err error
	k.Proc, err = StartProcess("kube-apiserver", filepath.Join(k.Dir, "kube-apiserver.log"), nil, bin, append(args, extraArgs...)...)
	if err != nil {
		return err
	}
	if err = k.waitReady(ctx, 500*time.Millisecond); err != nil {
		k.Proc.Stop(5 * time.Second)
		return fmt.Errorf("kube-apiserver not ready: %w\n%s", err, k.Proc.Tail(40))
	}
	return nil
}

// waitReady polls /readyz every interval, for up to 2 minutes, until it
// answers 200; it gives up at once if the process exits.
func (k *KubeAPIServer) waitReady(ctx context.Context, interval time.Duration) error {
	_, err := Poll(ctx, 120*time.Second, interval, func() (bool, error) {
		if exited, werr := k.Proc.Exited(); exited {
			return false, Permanent(fmt.Errorf("kube-apiserver exited: %v", werr))
		}
		code, _, err := k.Get(ctx, "/readyz", k.AdminToken)
		if err != nil {
			return false, err
		}
		return code == http.StatusOK, nil
	})
	return err
}

// HTTPClient returns a client that trusts the cluster CA.
func (k *KubeAPIServer) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: k.PKI.CertPool},
			DisableKeepAlives: true,
		},
	}
}

// Get performs GET path with a bearer token (none if empty) and returns the
// status code and body.
func (k *KubeAPIServer) Get(ctx context.Context, path, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.URL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := k.HTTPClient().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}
