package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/client-go/rest"
)

const (
	clusterStoragePrefix = "clusters/"

	defaultQPS   = 500
	defaultBurst = 1000
	maxQPS       = 100000
	maxBurst     = 100000

	// defaultRequestTimeout bounds every call to the API server so a hung
	// server fails an issue quickly instead of holding the Vault request.
	defaultRequestTimeout = 15 * time.Second
)

// clusterConfig is how the plugin reaches one Kubernetes API server.
type clusterConfig struct {
	Host             string  `json:"kubernetes_host,omitempty"`
	CACert           string  `json:"kubernetes_ca_cert,omitempty"`
	JWT              string  `json:"service_account_jwt,omitempty"`
	TLSServerName    string  `json:"tls_server_name,omitempty"`
	ProxyURL         string  `json:"proxy_url,omitempty"`
	KubeconfigHost   string  `json:"kubeconfig_host,omitempty"`
	KubeconfigCACert string  `json:"kubeconfig_ca_cert,omitempty"`
	QPS              float32 `json:"qps,omitempty"`
	Burst            int     `json:"burst,omitempty"`
	// EndpointID names where the plugin connects (host, CA, TLS server
	// name, proxy); it changes whenever one of them does. Leases and WAL
	// entries record it, so revoke reaches the API server that issued them.
	EndpointID string `json:"endpoint_id,omitempty"`
	// LeaseHorizonRecorded says every lease this endpoint issued recorded
	// its expiry in the endpoint's lease horizon (endpoint.go): true for
	// endpoints created since horizons exist. Without it, leases from
	// before may outlive the horizon.
	LeaseHorizonRecorded bool `json:"lease_horizon_recorded,omitempty"`

	// RotationPeriod (0: manual only) and JWTTTL (0: the default) drive
	// the rotation of JWT by the plugin itself (rotation.go).
	RotationPeriod time.Duration `json:"rotation_period,omitempty"`
	JWTTTL         time.Duration `json:"service_account_jwt_ttl,omitempty"`
	// What is known of JWT without the token itself: its credential id and
	// expiry (from its claims), and whether the plugin created it.
	JWTCredentialID string    `json:"service_account_jwt_credential_id,omitempty"`
	JWTExpiresAt    time.Time `json:"service_account_jwt_expires_at,omitzero"`
	// RotatedSecret is the Secret JWT is bound to when the plugin issued
	// JWT by rotating; deleting it kills JWT. Nil for a token the operator
	// wrote.
	RotatedSecret     *objectRef `json:"rotated_secret,omitempty"`
	LastRotatedAt     time.Time  `json:"last_rotated_at,omitzero"`
	LastRotationError string     `json:"last_rotation_error,omitempty"`
	// PendingDeletion are the Secrets of credentials that rotation replaced,
	// deleted once their grace is over (by a timer, or by the next periodic
	// run if the process died meanwhile).
	PendingDeletion []pendingSecret `json:"pending_deletion,omitempty"`
}

// legacyEndpointID stands for the endpoint of a configuration, lease or WAL
// entry written before endpoints had IDs.
const legacyEndpointID = "legacy"

func (c *clusterConfig) endpointID() string {
	if c.EndpointID == "" {
		return legacyEndpointID
	}
	return c.EndpointID
}

// inCluster reports whether the plugin uses the pod's own credentials.
func (c *clusterConfig) inCluster() bool { return c.JWT == "" }

// connection is everything that decides where, and through what, the
// plugin's credential is sent.
type connection struct {
	host, caCert, tlsServerName, proxyURL string
}

func (c *clusterConfig) connection() connection {
	return connection{host: normalizeHost(c.Host), caCert: c.CACert, tlsServerName: c.TLSServerName, proxyURL: c.ProxyURL}
}

// errInClusterConnection: the pod's own token goes only to the in-cluster
// API server, verified with the pod's own CA.
var errInClusterConnection = errors.New("without service_account_jwt the plugin uses the pod's own token, which it sends only to the in-cluster API server verified by the pod's CA: leave kubernetes_host, kubernetes_ca_cert, tls_server_name and proxy_url unset, or send service_account_jwt")

// inClusterEnv locates the pod's own credentials; a field so tests can point
// it at temporary files.
type inClusterEnv struct {
	TokenPath string
	CAPath    string
	Getenv    func(string) string
}

func defaultInClusterEnv() inClusterEnv {
	return inClusterEnv{
		TokenPath: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		CAPath:    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
		Getenv:    os.Getenv,
	}
}

func (e inClusterEnv) host() (string, error) {
	host, port := e.Getenv("KUBERNETES_SERVICE_HOST"), e.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", fmt.Errorf("kubernetes_host is not set and Vault does not run in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT are unset)")
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// endpoint is what the plugin and the issued kubeconfigs use for one cluster,
// with the in-cluster defaults resolved.
type endpoint struct {
	ID               string
	Host             string
	CACert           string
	KubeconfigHost   string
	KubeconfigCACert string
	TLSServerName    string
	restConfig       *rest.Config
}

func (c *clusterConfig) resolve(env inClusterEnv, userAgent string, timeout time.Duration) (*endpoint, error) {
	if c.inCluster() && c.connection() != (connection{}) {
		return nil, errInClusterConnection
	}
	ep := &endpoint{ID: c.endpointID(), Host: c.Host, CACert: c.CACert, TLSServerName: c.TLSServerName}
	rc := &rest.Config{
		QPS:       c.QPS,
		Burst:     c.Burst,
		Timeout:   timeout,
		UserAgent: userAgent,
	}
	if ep.Host == "" {
		host, err := env.host()
		if err != nil {
			return nil, err
		}
		ep.Host = host
		ca, err := os.ReadFile(env.CAPath)
		if err != nil {
			return nil, fmt.Errorf("reading the pod's CA certificate: %w", err)
		}
		ep.CACert = string(ca)
	}
	if c.JWT != "" {
		rc.BearerToken = c.JWT
	} else {
		// client-go re-reads this file periodically, so the pod's projected
		// token is picked up after kubelet rotates it.
		rc.BearerTokenFile = env.TokenPath
	}
	rc.Host = ep.Host
	rc.TLSClientConfig = rest.TLSClientConfig{CAData: []byte(ep.CACert), ServerName: c.TLSServerName}
	if rc.QPS == 0 {
		rc.QPS = defaultQPS
	}
	if rc.Burst == 0 {
		rc.Burst = defaultBurst
	}
	if c.ProxyURL != "" {
		proxy, err := url.Parse(c.ProxyURL)
		if err != nil {
			// url.Error quotes the URL, and with it any proxy password.
			return nil, errors.New("proxy_url does not parse")
		}
		rc.Proxy = http.ProxyURL(proxy)
	}
	ep.restConfig = rc

	ep.KubeconfigHost, ep.KubeconfigCACert = c.KubeconfigHost, c.KubeconfigCACert
	if ep.KubeconfigHost == "" {
		ep.KubeconfigHost = ep.Host
	} else {
		// A different address for users: the name Vault needs may not apply.
		ep.TLSServerName = ""
	}
	if ep.KubeconfigCACert == "" {
		ep.KubeconfigCACert = ep.CACert
	}
	return ep, nil
}

func getCluster(ctx context.Context, s logical.Storage, name string) (*clusterConfig, error) {
	entry, err := s.Get(ctx, clusterStoragePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading cluster %q: %w", name, err)
	}
	if entry == nil {
		return nil, nil
	}
	var cfg clusterConfig
	if err := entry.DecodeJSON(&cfg); err != nil {
		return nil, fmt.Errorf("decoding cluster %q: %w", name, err)
	}
	return &cfg, nil
}

func putCluster(ctx context.Context, s logical.Storage, name string, cfg *clusterConfig) error {
	entry, err := logical.StorageEntryJSON(clusterStoragePrefix+name, cfg)
	if err != nil {
		return fmt.Errorf("encoding cluster %q: %w", name, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing cluster %q: %w", name, err)
	}
	return nil
}

// normalizeHost ignores a trailing slash and the case of scheme and host,
// so re-sending the same host is not a change of endpoint.
func normalizeHost(s string) string {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil {
		return s
	}
	u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	return u.String()
}
