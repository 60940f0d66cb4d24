package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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

	// KubeconfigExecCommand is the credential plugin command of
	// kubeconfig/ answers: vault, bao, or an absolute path to one of them.
	KubeconfigExecCommand string `json:"kubeconfig_exec_command,omitempty"`

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

	// UseIssuer: the plugin authenticates with JWTs it signs itself
	// (issuer.go) and no Kubernetes credential is stored. IssuerSubject is
	// their sub, "<mount path>:<cluster name>", captured when the entry
	// entered issuer mode so that a remount does not change the identity
	// the API server's RBAC names.
	UseIssuer     bool   `json:"use_issuer,omitempty"`
	IssuerSubject string `json:"issuer_subject,omitempty"`

	// What the plugin learned or did, apart from what the operator wrote
	// (stored inline, in the same JSON object).
	credentialState
}

// credentialState is what the plugin knows of the stored credential and
// its rotation, as opposed to the configuration the operator wrote.
type credentialState struct {
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
func (c *clusterConfig) inCluster() bool { return c.JWT == "" && !c.UseIssuer }

// issuerAudience is the audience of the tokens the plugin signs for this
// endpoint. It is generated, never written: a clusters/ writer must not be
// able to have the plugin sign a token another API server accepts, and a
// re-pointed entry (a new endpoint) never carries a token the old API
// server accepts.
func (c *clusterConfig) issuerAudience() string {
	if !c.UseIssuer {
		return ""
	}
	return issuerAudiencePrefix + c.endpointID()
}

// connection is everything that decides where, and through what, the
// plugin's credential is sent.
type connection struct {
	host, caCert, tlsServerName, proxyURL string
	useIssuer                             bool
}

func (c *clusterConfig) connection() connection {
	return connection{host: normalizeHost(c.Host), caCert: c.CACert, tlsServerName: c.TLSServerName, proxyURL: c.ProxyURL, useIssuer: c.UseIssuer}
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

func effectiveQPS(q float32) float32 {
	if q == 0 {
		return defaultQPS
	}
	return q
}

func effectiveBurst(b int) int {
	if b == 0 {
		return defaultBurst
	}
	return b
}

// effectiveJWTTTL is the lifetime rotation asks for: service_account_jwt_ttl,
// or twice rotation_period and at least 10 minutes.
func (c *clusterConfig) effectiveJWTTTL() time.Duration {
	if c.JWTTTL > 0 {
		return c.JWTTTL
	}
	return max(2*c.RotationPeriod, minJWTTTL)
}

// validateRotation checks rotation_period and service_account_jwt_ttl.
func validateRotation(c *clusterConfig) error {
	if c.RotationPeriod < 0 || (c.RotationPeriod > 0 && c.RotationPeriod < minRotationPeriod) || c.RotationPeriod > maxTokenLifetime {
		return fmt.Errorf("rotation_period must be 0 (rotate only on rotate-root) or between %s and %s", minRotationPeriod, maxTokenLifetime)
	}
	if c.JWTTTL < 0 || (c.JWTTTL > 0 && c.JWTTTL < minJWTTTL) || c.JWTTTL > maxTokenLifetime {
		return fmt.Errorf("service_account_jwt_ttl must be 0 (the default: twice rotation_period, at least %s) or between %s (Kubernetes' TokenRequest minimum) and %s", minJWTTTL, minJWTTTL, maxTokenLifetime)
	}
	if ttl := c.effectiveJWTTTL(); ttl > maxTokenLifetime {
		return fmt.Errorf("the credential lifetime (service_account_jwt_ttl, by default twice rotation_period) would be %d s, longer than Kubernetes' TokenRequest allows (%d s): set a shorter rotation_period or an explicit service_account_jwt_ttl", int64(ttl/time.Second), int64(maxTokenLifetime/time.Second))
	}
	if c.RotationPeriod > 0 && c.effectiveJWTTTL() < c.RotationPeriod+rotationMargin {
		return fmt.Errorf("service_account_jwt_ttl (%s) must be at least rotation_period (%s) plus %s, so that a failed rotation can be retried before the credential expires", c.effectiveJWTTTL(), c.RotationPeriod, rotationMargin)
	}
	if c.UseIssuer && (c.RotationPeriod > 0 || c.JWTTTL > 0) {
		return errors.New("rotation_period and service_account_jwt_ttl rotate a stored service_account_jwt: with use_issuer there is none (the issuer's keys rotate per issuer/config)")
	}
	if c.inCluster() && (c.RotationPeriod > 0 || c.JWTTTL > 0) {
		return errors.New("rotation_period and service_account_jwt_ttl need a stored service_account_jwt: without one the plugin uses the pod's own token, which the kubelet rotates")
	}
	return nil
}

// noteNewJWT records what the claims of a JWT the operator wrote say (its
// credential id and expiry) and forgets the previous rotation's state. The
// previous rotation's Secret, if any, is scheduled for deletion when the
// endpoint stays the same; after a re-point the retired endpoint still
// needs that credential to revoke its leases, and it dies at its expiry.
func noteNewJWT(cfg, old *clusterConfig, grace time.Duration, now time.Time) {
	cfg.JWTCredentialID, cfg.JWTExpiresAt = "", time.Time{}
	if claims, err := parseTokenClaims(cfg.JWT); err == nil {
		cfg.JWTCredentialID, cfg.JWTExpiresAt = credentialID(claims.JTI), claims.expiresAt()
	}
	cfg.RotatedSecret, cfg.LastRotatedAt, cfg.LastRotationError = nil, time.Time{}, ""
	if old != nil && old.RotatedSecret != nil && old.endpointID() == cfg.endpointID() {
		cfg.PendingDeletion = append(slices.Clone(old.PendingDeletion), pendingSecret{
			Ref: *old.RotatedSecret, Endpoint: old.endpointID(), CredentialID: old.JWTCredentialID, DeleteAfter: now.Add(grace).UTC(), ExpiresAt: old.JWTExpiresAt,
		})
	}
}

// validate checks a cluster entry as it will be stored, against the entry
// it replaces (old, nil for a new one): jwtSent says whether this write
// carried service_account_jwt. Whatever would fail later (a kubeconfig
// that cannot be built, a credential sent to a new endpoint) fails here.
func (cfg *clusterConfig) validate(old *clusterConfig, jwtSent bool) error {
	// The credential, stored or the pod's own, goes only where it was
	// written for: whoever changes where or how the plugin connects must
	// hold it.
	if old != nil && old.UseIssuer && !cfg.UseIssuer && !jwtSent {
		return errors.New("leaving issuer mode (use_issuer false) needs service_account_jwt in the same write")
	}
	// In issuer mode there is no credential to protect: every such change
	// makes a new endpoint, and with it a new audience.
	if old != nil && !jwtSent && !cfg.UseIssuer && old.connection() != cfg.connection() {
		return errors.New("kubernetes_host, kubernetes_ca_cert, tls_server_name or proxy_url changed: send service_account_jwt in the same write, so the stored credential never goes to an endpoint it was not written for")
	}
	if cfg.UseIssuer {
		if err := validateIssuerMode(cfg, jwtSent); err != nil {
			return err
		}
	}
	if cfg.Host != "" {
		if err := validateHTTPSURL("kubernetes_host", cfg.Host); err != nil {
			return err
		}
		if cfg.JWT == "" && !cfg.UseIssuer {
			return errors.New("service_account_jwt is required when kubernetes_host is set; leave both unset to use the pod's own credentials")
		}
	}
	if cfg.inCluster() && cfg.connection() != (connection{}) {
		return errInClusterConnection
	}
	if cfg.JWT != "" {
		if err := validateJWTShape(cfg.JWT); err != nil {
			return err
		}
	}
	for field, v := range map[string]string{"kubernetes_ca_cert": cfg.CACert, "kubeconfig_ca_cert": cfg.KubeconfigCACert} {
		if v != "" {
			if err := validateCACertPEM(field, v); err != nil {
				return err
			}
		}
	}
	if cfg.KubeconfigHost != "" {
		if err := validateHTTPSURL("kubeconfig_host", cfg.KubeconfigHost); err != nil {
			return err
		}
	}
	if cfg.KubeconfigExecCommand != "" {
		if err := validateExecCommand("kubeconfig_exec_command", cfg.KubeconfigExecCommand, true); err != nil {
			return err
		}
	}
	if cfg.ProxyURL != "" {
		if err := validateProxyURL(cfg.ProxyURL); err != nil {
			return err
		}
	}
	if cfg.TLSServerName != "" {
		if errs := validateDNSName(cfg.TLSServerName); errs != nil {
			return errs
		}
	}
	// Issued kubeconfigs carry these values: whatever would break the build
	// must fail here, not after a token was issued.
	for _, server := range [][2]string{{cfg.Host, cfg.CACert}, {cfg.KubeconfigHost, cfg.KubeconfigCACert}} {
		if _, _, err := buildKubeconfig(kubeconfigParams{
			ClusterName: "c", Server: server[0], CACert: server[1],
			TLSServerName: cfg.TLSServerName, UserName: "u", Token: "t", Namespace: "n",
		}); err != nil {
			return fmt.Errorf("the configuration cannot be written into a kubeconfig: %v", err)
		}
	}
	if !(cfg.QPS >= 0 && cfg.QPS <= maxQPS) { // also refuses NaN
		return fmt.Errorf("qps must be between 0 (default %d) and %d", defaultQPS, maxQPS)
	}
	if cfg.Burst < 0 || cfg.Burst > maxBurst {
		return fmt.Errorf("burst must be between 0 (default %d) and %d", defaultBurst, maxBurst)
	}
	return validateRotation(cfg)
}

// validateIssuerMode: in issuer mode the plugin holds no credential, so
// none may be written, and the API server must be named (the in-cluster
// default exists for the pod's own token).
func validateIssuerMode(cfg *clusterConfig, jwtSent bool) error {
	if jwtSent || cfg.JWT != "" {
		return errors.New("service_account_jwt must not be set with use_issuer: in issuer mode the plugin authenticates with tokens it signs and stores no Kubernetes credential")
	}
	if cfg.Host == "" {
		return errors.New("use_issuer needs kubernetes_host: the API server that trusts this mount as an issuer")
	}
	return nil
}
