package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	clustersHelpSynopsis    = "Configure how the plugin reaches a Kubernetes API server."
	clustersHelpDescription = `
A cluster holds the API server's https:// address and CA, and the plugin's own
token-requester credential (service_account_jwt, write-only). Leave
kubernetes_host, kubernetes_ca_cert and service_account_jwt unset when Vault
runs in a pod of that cluster: the pod's own service account is used and its
rotated token re-read. Any change of kubernetes_host, kubernetes_ca_cert,
tls_server_name or proxy_url requires sending service_account_jwt in the same
write, so a stored credential never travels to an endpoint it was not written
for. With rotation_period the plugin rotates its own credential
(clusters/<name>/rotate-root does it on demand).

With use_issuer the plugin stores no Kubernetes credential: it signs, as the
issuer configured at issuer/config, short-lived JWTs whose audience
(issuer_audience, vault-plugin-scanner:<endpoint_id>) is generated for the
endpoint and whose subject (issuer_subject, <mount>:<name>) is fixed when the
entry enters issuer mode. Any change of where the plugin connects makes a
new endpoint and a new audience, which the API server must be told to trust
(read clusters/<name>/authentication-config again).
`
	clustersListHelpSynopsis = "List the configured clusters."
)

func clusterFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name": {
			Type:        framework.TypeString,
			Description: "Name of the cluster.",
			Required:    true,
		},
		"kubernetes_host": {
			Type:        framework.TypeString,
			Description: "https:// URL of the Kubernetes API server as the plugin reaches it. Unset: the in-cluster address (KUBERNETES_SERVICE_HOST/PORT).",
			DisplayAttrs: &framework.DisplayAttributes{
				Name: "Kubernetes host",
			},
		},
		"kubernetes_ca_cert": {
			Type:        framework.TypeString,
			Description: "PEM bundle of the CA(s) that sign the API server's certificate. Unset with an unset host: the pod's ca.crt. Unset with a host: the system roots.",
			DisplayAttrs: &framework.DisplayAttributes{
				Name: "Kubernetes CA certificate",
			},
		},
		"service_account_jwt": {
			Type:        framework.TypeString,
			Description: "The plugin's token-requester JWT. Write-only. Required with kubernetes_host; unset with an unset host: the pod's own token.",
			DisplayAttrs: &framework.DisplayAttributes{
				Name:      "Service account JWT",
				Sensitive: true,
			},
		},
		"tls_server_name": {
			Type:        framework.TypeString,
			Description: "Name to verify the API server's certificate against, when it differs from the host in kubernetes_host.",
		},
		"proxy_url": {
			Type:        framework.TypeString,
			Description: "Proxy (http, https or socks5 URL) through which the plugin reaches the API server.",
		},
		"kubeconfig_host": {
			Type:        framework.TypeString,
			Description: "https:// URL that issued kubeconfigs carry, when users reach the API server differently from Vault. Default: kubernetes_host.",
		},
		"kubeconfig_ca_cert": {
			Type:        framework.TypeString,
			Description: "PEM CA bundle that issued kubeconfigs carry. Default: kubernetes_ca_cert.",
		},
		"kubeconfig_exec_command": {
			Type:        framework.TypeString,
			Description: "The credential plugin that kubeconfig/ answers run: vault, bao (OpenBao), or an absolute path whose last element is one of them (not under /tmp, /var/tmp or /dev/shm). Default: vault; a kubeconfig/ request's exec_command overrides it with vault or bao.",
		},
		"qps": {
			Type:        framework.TypeFloat,
			Description: fmt.Sprintf("Requests per second the plugin may send to this API server (client-side limit). Default %d.", defaultQPS),
		},
		"burst": {
			Type:        framework.TypeInt,
			Description: fmt.Sprintf("Burst above qps the plugin may send to this API server. Default %d.", defaultBurst),
		},
		"rotation_period": {
			Type:        framework.TypeDurationSecond,
			Description: "Rotate the stored service_account_jwt automatically once this much time has passed since the last rotation (0: only on rotate-root). At least 1m.",
		},
		"service_account_jwt_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Lifetime of a credential the plugin rotates to. Default twice rotation_period, at least 10m; at least rotation_period plus 5m.",
		},
		"use_issuer": {
			Type:        framework.TypeBool,
			Description: "Authenticate with JWTs the plugin signs as the issuer of issuer/config, which the API server trusts (clusters/<name>/authentication-config); no Kubernetes credential is stored. Excludes service_account_jwt; needs kubernetes_host.",
		},
	}
}

func pathClusters(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "clusters/" + namePathPattern,
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "cluster",
			},
			Fields:         clusterFields(),
			ExistenceCheck: b.clusterExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.entry(clusterName, true, b.clusterWrite),
					Summary:                     "Configure a cluster.",
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "configure"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.entry(clusterName, true, b.clusterWrite),
					Summary:                     "Update a cluster.",
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "configure"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.entry(clusterName, false, b.clusterRead),
					Summary:      "Read a cluster's configuration (never the JWT).",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.entry(clusterName, false, b.clusterDelete),
					Summary:                     "Delete a cluster no role uses.",
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "delete"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    clustersHelpSynopsis,
			HelpDescription: clustersHelpDescription,
		},
		{
			Pattern: "clusters/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "clusters",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.entry(noName, false, b.clusterList),
					Summary:      "List clusters.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list"},
				},
			},
			HelpSynopsis:    clustersListHelpSynopsis,
			HelpDescription: clustersListHelpSynopsis,
		},
		pathClusterCheck(b),
		pathClusterRBAC(b),
		pathRotateRoot(b),
		pathClusterAuthConfig(b),
	}
}

// clusterActionPath is the route of clusters/<name>/<action> (check, rbac,
// rotate-root, authentication-config): the cluster's name is its one field;
// ops and the help are the action's own.
func clusterActionPath(action, operationSuffix string, ops map[logical.Operation]framework.OperationHandler, synopsis, description string) *framework.Path {
	return &framework.Path{
		Pattern: "clusters/" + namePathPattern + "/" + action + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: operationSuffix,
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeString, Description: "Name of the cluster.", Required: true},
		},
		Operations:      ops,
		HelpSynopsis:    synopsis,
		HelpDescription: description,
	}
}

func (b *backend) clusterExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateVaultName("cluster", name) != nil {
		return false, nil
	}
	cfg, err := getCluster(ctx, req.Storage, name)
	return cfg != nil, err
}

func (b *backend) clusterWrite(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	b.clusterLock.Lock()
	defer b.clusterLock.Unlock()
	old, err := getCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	cfg := &clusterConfig{}
	if old != nil {
		*cfg = *old
	}
	if err := applyClusterFields(cfg, old, d); err != nil {
		return nil, userError{err}
	}
	if err := b.enterIssuerMode(ctx, req, cfg, name); err != nil {
		return nil, err
	}
	if old == nil || old.connection() != cfg.connection() {
		cfg.EndpointID = randomString(16)
		cfg.LeaseHorizonRecorded = true
	}
	if old == nil || old.JWT != cfg.JWT {
		noteNewJWT(cfg, old, b.rotationGrace, time.Now())
		b.rotation.reset(name)
	}
	if old != nil && old.endpointID() != cfg.endpointID() {
		// Leases the old endpoint issued are revoked there, never here.
		if err := retireEndpoint(ctx, req.Storage, name, old, time.Now()); err != nil {
			return nil, err
		}
	}
	if err := putCluster(ctx, req.Storage, name, cfg); err != nil {
		return nil, err
	}
	b.dropCachedClient(name)
	var warnings []string
	if cfg.UseIssuer && (old == nil || old.endpointID() != cfg.endpointID()) {
		warnings = append(warnings, fmt.Sprintf("the plugin now authenticates to this API server with audience %s: the API server must trust it before the cluster works; read clusters/%s/authentication-config and apply it (and clusters/%s/rbac)", cfg.issuerAudience(), name, name))
	}
	if old != nil && old.RotatedSecret != nil && old.JWT != cfg.JWT {
		if old.endpointID() == cfg.endpointID() {
			b.rotation.after(b.rotationGrace, func() { b.deletePendingAfterGrace(req.Storage, name) })
			warnings = append(warnings, fmt.Sprintf("the credential the plugin had rotated to (%s) is deleted in %s", old.JWTCredentialID, b.rotationGrace))
		} else {
			warnings = append(warnings, fmt.Sprintf("the credential the plugin had rotated to (%s) stays with the retired endpoint, to revoke its leases; it is ended (its Secret deleted) when the endpoint is forgotten, after keep_until in retired_endpoints, or at its expiry at %s if that comes first", old.JWTCredentialID, old.JWTExpiresAt.Format(time.RFC3339)))
		}
	}
	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

// enterIssuerMode fixes what an entry in issuer mode signs as: the issuer
// must be configured, and the subject is taken from the mount path the
// first time the entry is in issuer mode, then kept. Leaving issuer mode
// forgets it.
func (b *backend) enterIssuerMode(ctx context.Context, req *logical.Request, cfg *clusterConfig, name string) error {
	if !cfg.UseIssuer {
		cfg.IssuerSubject = ""
		return nil
	}
	issuer, err := getIssuerConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	if issuer == nil {
		return userError{errors.New("use_issuer needs the issuer configured: write issuer/config first")}
	}
	if cfg.IssuerSubject != "" {
		return nil
	}
	mount := strings.TrimSuffix(req.MountPoint, "/")
	if mount == "" {
		return errors.New("the request does not name the mount path, which the issuer's subject is made of")
	}
	cfg.IssuerSubject = mount + ":" + name
	return nil
}

// applyClusterFields merges the request into cfg and validates the result.
func applyClusterFields(cfg, old *clusterConfig, d *framework.FieldData) error {
	str := func(field string, dst *string) {
		if v, ok := d.GetOk(field); ok {
			*dst = strings.TrimSpace(v.(string))
		}
	}
	str("kubernetes_host", &cfg.Host)
	pemField := func(field string, dst *string) {
		if v, ok := d.GetOk(field); ok {
			*dst = v.(string) // kept byte for byte: issued kubeconfigs carry it
		}
	}
	pemField("kubernetes_ca_cert", &cfg.CACert)
	str("tls_server_name", &cfg.TLSServerName)
	str("proxy_url", &cfg.ProxyURL)
	str("kubeconfig_host", &cfg.KubeconfigHost)
	pemField("kubeconfig_ca_cert", &cfg.KubeconfigCACert)
	str("kubeconfig_exec_command", &cfg.KubeconfigExecCommand)
	_, jwtSent := d.GetOk("service_account_jwt")
	str("service_account_jwt", &cfg.JWT)
	if v, ok := d.GetOk("use_issuer"); ok {
		entering := v.(bool) && !cfg.UseIssuer
		cfg.UseIssuer = v.(bool)
		if entering && !jwtSent {
			// The stored credential stays with the retired endpoint, and
			// rotating it no longer applies here.
			cfg.JWT, cfg.RotationPeriod, cfg.JWTTTL = "", 0, 0
		}
	}
	if v, ok := d.GetOk("qps"); ok {
		cfg.QPS = float32(v.(float64))
	}
	if v, ok := d.GetOk("burst"); ok {
		cfg.Burst = v.(int)
	}
	if v, ok := d.GetOk("rotation_period"); ok {
		cfg.RotationPeriod = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("service_account_jwt_ttl"); ok {
		cfg.JWTTTL = time.Duration(v.(int)) * time.Second
	}

	return cfg.validate(old, jwtSent)
}

func (b *backend) clusterRead(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	cfg, err := getCluster(ctx, req.Storage, name)
	if err != nil || cfg == nil {
		return nil, err
	}
	retired, err := listRetiredEndpoints(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	retiredData := make([]map[string]interface{}, 0, len(retired))
	for _, r := range retired {
		// keep_until is computed as pruning computes it, from the recorded
		// lease horizon and the mount's max lease TTL now.
		horizon, err := getLeaseHorizon(ctx, req.Storage, name, r.Config.endpointID())
		if err != nil {
			return nil, err
		}
		retiredData = append(retiredData, map[string]interface{}{
			"endpoint_id":     r.Config.endpointID(),
			"kubernetes_host": r.Config.Host,
			"issuer_audience": r.Config.issuerAudience(),
			"retired_at":      r.RetiredAt.Format(time.RFC3339),
			"lease_horizon":   formatTime(horizon),
			"keep_until":      r.keepUntil(horizon, b.System().MaxLeaseTTL()).Format(time.RFC3339),
		})
	}
	return &logical.Response{Data: map[string]interface{}{
		"endpoint_id":             cfg.endpointID(),
		"retired_endpoints":       retiredData,
		"kubernetes_host":         cfg.Host,
		"kubernetes_ca_cert":      cfg.CACert,
		"service_account_jwt_set": cfg.JWT != "",
		"tls_server_name":         cfg.TLSServerName,
		"proxy_url":               redactedURL(cfg.ProxyURL),
		"kubeconfig_host":         cfg.KubeconfigHost,
		"kubeconfig_ca_cert":      cfg.KubeconfigCACert,
		"kubeconfig_exec_command": cfg.KubeconfigExecCommand,
		"qps":                     effectiveQPS(cfg.QPS),
		"burst":                   effectiveBurst(cfg.Burst),

		"use_issuer":      cfg.UseIssuer,
		"issuer_audience": cfg.issuerAudience(),
		"issuer_subject":  cfg.IssuerSubject,

		"rotation_period":                   int64(cfg.RotationPeriod / time.Second),
		"service_account_jwt_ttl":           int64(cfg.effectiveJWTTTL() / time.Second),
		"service_account_jwt_expires_at":    formatTime(cfg.JWTExpiresAt),
		"service_account_jwt_credential_id": cfg.JWTCredentialID,
		"service_account_jwt_rotated":       cfg.RotatedSecret != nil,
		"last_rotated_at":                   formatTime(cfg.LastRotatedAt),
		"last_rotation_error":               cfg.LastRotationError,
		"pending_secret_deletions":          pendingData(cfg.PendingDeletion),
	}}, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func pendingData(pending []pendingSecret) []map[string]interface{} {
	out := make([]map[string]interface{}, 0, len(pending))
	for _, p := range pending {
		out = append(out, map[string]interface{}{
			"secret": p.Ref.Namespace + "/" + p.Ref.Name, "credential_id": p.CredentialID, "delete_after": formatTime(p.DeleteAfter),
		})
	}
	return out
}

func (b *backend) clusterDelete(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	b.clusterInUse.Lock()
	defer b.clusterInUse.Unlock()
	users, err := rolesUsingCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(users) > 0 {
		return nil, userError{fmt.Errorf("cluster %q is used by role(s) %s; delete or move them first", name, strings.Join(sortedKeys(users), ", "))}
	}
	b.clusterLock.Lock()
	defer b.clusterLock.Unlock()
	cfg, err := getCluster(ctx, req.Storage, name)
	if err != nil || cfg == nil {
		return nil, err
	}
	// Replaced credentials die now rather than after their grace: the entry
	// that remembers them goes. What cannot be deleted dies at its expiry.
	for _, p := range cfg.PendingDeletion {
		if err := b.deleteOnEndpoint(ctx, req.Storage, name, p.Endpoint, p.Ref); err != nil {
			b.Logger().Warn("deleting the Secret of a replaced credential with its cluster; it dies at its expiry", "cluster", name, "credential_id", p.CredentialID, "secret", p.Ref.String(), "error", err)
		}
	}
	// Its outstanding leases stay revocable on the endpoint that issued them.
	if err := retireEndpoint(ctx, req.Storage, name, cfg, time.Now()); err != nil {
		return nil, err
	}
	if err := req.Storage.Delete(ctx, clusterStoragePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting cluster %q: %w", name, err)
	}
	b.dropCachedClient(name)
	return nil, nil
}

func (b *backend) clusterList(ctx context.Context, req *logical.Request, _ *framework.FieldData, _ string) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, clusterStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing clusters: %w", err)
	}
	return logical.ListResponse(names), nil
}
