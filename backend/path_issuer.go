package backend

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// issuer/config, issuer/rotate and the two unauthenticated documents an
// API server reads: route, schema, handler and help.

const (
	wellKnownDiscoveryPath = ".well-known/openid-configuration"
	wellKnownKeysPath      = ".well-known/keys"

	issuerConfigHelpSynopsis    = "Configure the mount as a token issuer Kubernetes API servers trust."
	issuerConfigHelpDescription = `
With an issuer configured, a cluster entry written with use_issuer stores no
Kubernetes credential: the plugin signs short-lived JWTs (token_ttl) for its
own calls, and the API server verifies them against the keys this mount
publishes, unauthenticated, at <issuer>/.well-known/openid-configuration and
<issuer>/.well-known/keys. issuer is the https URL the API servers reach this
mount at (e.g. https://vault.example.com:8200/v1/scanner); it cannot change
while a cluster entry (or a retired endpoint still revoking leases) uses
issuer mode. issuer_ca_cert is only copied into the AuthenticationConfiguration
that clusters/<name>/authentication-config returns.

Keys: a next key is published before it ever signs; every rotation_period
(counted from the next key's creation; issuer/rotate does it at once) next
becomes current, current becomes previous, and a new next is made. A previous
key stays published until every token it signed has expired. A new
signing_algorithm replaces the next key and so applies from the following
rotation. Reads list the keys' IDs, states and times, never key material.
`
	issuerRotateHelpSynopsis    = "Rotate the issuer's signing keys now."
	issuerRotateHelpDescription = `
The next key (already published) becomes current and signs from now on, the
current key becomes previous and stays published until the tokens it signed
have expired, and a new next key is made and published.
`
	wellKnownHelpSynopsis    = "The issuer's OpenID discovery document and public keys (unauthenticated)."
	wellKnownHelpDescription = `
What a Kubernetes API server fetches to verify the plugin's tokens:
.well-known/openid-configuration names the issuer and its keys' URL;
.well-known/keys is the JSON Web Key Set of the next, current and still
published previous public keys. Both answer 404 when no issuer is configured
and say nothing else.
`
)

func pathIssuer(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "issuer/config$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "issuer-configuration",
			},
			Fields: map[string]*framework.FieldSchema{
				"issuer": {
					Type:        framework.TypeString,
					Description: "https URL at which the API servers reach this mount, e.g. https://vault.example.com:8200/v1/scanner: the tokens' iss. No query, fragment or trailing slash. Required on the first write.",
				},
				"issuer_ca_cert": {
					Type:        framework.TypeString,
					Description: "PEM CA of Vault's TLS certificate, copied into the AuthenticationConfiguration that clusters/<name>/authentication-config returns.",
				},
				"signing_algorithm": {
					Type:          framework.TypeString,
					Description:   "RS256 (default) or ES256.",
					AllowedValues: []interface{}{algRS256, algES256},
				},
				"rotation_period": {
					Type:        framework.TypeDurationSecond,
					Description: fmt.Sprintf("How long a next key is published before it signs, and so how often keys rotate. Default %s, at least %s.", defaultIssuerRotationPeriod, minIssuerRotationPeriod),
				},
				"token_ttl": {
					Type:        framework.TypeDurationSecond,
					Description: fmt.Sprintf("Lifetime of the JWTs the plugin signs for its own calls. Default %s, between %s and %s.", defaultIssuerTokenTTL, minIssuerTokenTTL, maxIssuerTokenTTL),
				},
			},
			ExistenceCheck: b.issuerConfigExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.entry(noName, false, b.issuerConfigRead),
					Summary:      "Read the issuer's configuration and its keys' IDs and states (never key material).",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.entry(noName, true, b.issuerConfigWrite),
					Summary:                     "Configure the issuer.",
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "configure"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.entry(noName, true, b.issuerConfigWrite),
					Summary:                     "Configure the issuer.",
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "configure"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    issuerConfigHelpSynopsis,
			HelpDescription: issuerConfigHelpDescription,
		},
		{
			Pattern: "issuer/rotate$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "issuer-keys",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.entry(noName, true, b.issuerRotate),
					Summary:                     "Rotate the issuer's signing keys now.",
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "rotate"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    issuerRotateHelpSynopsis,
			HelpDescription: issuerRotateHelpDescription,
		},
		wellKnownPath(b, wellKnownDiscoveryPath, "issuer-discovery", (*issuerSnapshot).discoveryDocument),
		wellKnownPath(b, wellKnownKeysPath, "issuer-keys", (*issuerSnapshot).jwks),
	}
}

func wellKnownPath(b *backend, path, suffix string, render func(*issuerSnapshot, time.Time) ([]byte, error)) *framework.Path {
	return &framework.Path{
		Pattern: regexp.QuoteMeta(path) + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: suffix,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.entry(noName, false, b.wellKnown(render)),
				Summary:      "Read a document an API server fetches to verify the plugin's tokens (unauthenticated).",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
			},
		},
		HelpSynopsis:    wellKnownHelpSynopsis,
		HelpDescription: wellKnownHelpDescription,
	}
}

func (b *backend) issuerConfigExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := getIssuerConfig(ctx, req.Storage)
	return cfg != nil, err
}

func (b *backend) issuerConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData, _ string) (*logical.Response, error) {
	b.issuer.mu.Lock()
	defer b.issuer.mu.Unlock()
	old, err := getIssuerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg := defaultIssuerConfig()
	if old != nil {
		*cfg = *old
	}
	if v, ok := d.GetOk("issuer"); ok {
		cfg.Issuer = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("issuer_ca_cert"); ok {
		cfg.IssuerCACert = v.(string)
	}
	if v, ok := d.GetOk("signing_algorithm"); ok {
		cfg.SigningAlgorithm = strings.ToUpper(strings.TrimSpace(v.(string)))
	}
	if v, ok := d.GetOk("rotation_period"); ok {
		cfg.RotationPeriod = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("token_ttl"); ok {
		cfg.TokenTTL = time.Duration(v.(int)) * time.Second
	}
	if err := cfg.validate(); err != nil {
		return nil, userError{err}
	}
	if old != nil && old.Issuer != cfg.Issuer {
		users, err := issuerModeUsers(ctx, req.Storage)
		if err != nil {
			return nil, err
		}
		if len(users) > 0 {
			return nil, userError{fmt.Errorf("issuer cannot change while cluster(s) %s authenticate with it: their API servers trust only %s; switch them out of issuer mode (or wait until their retired endpoints are forgotten) first", strings.Join(users, ", "), old.Issuer)}
		}
	}
	now := time.Now()
	keys, err := getIssuerKeySet(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		keys, err = newIssuerKeySet(cfg, now)
	} else {
		err = keys.applyConfig(cfg, now)
	}
	if err != nil {
		return nil, err
	}
	// Keys first: a configuration is never stored without them.
	if err := keys.save(ctx, req.Storage); err != nil {
		return nil, err
	}
	if err := cfg.save(ctx, req.Storage); err != nil {
		return nil, err
	}
	b.issuer.drop()
	return &logical.Response{Data: issuerData(cfg, keys)}, nil
}

// issuerModeUsers names the cluster entries in issuer mode, and the
// retired endpoints in issuer mode still kept to revoke their leases.
func issuerModeUsers(ctx context.Context, s logical.Storage) ([]string, error) {
	names, err := s.List(ctx, clusterStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing clusters: %w", err)
	}
	var users []string
	for _, name := range names {
		cfg, err := getCluster(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if cfg != nil && cfg.UseIssuer {
			users = append(users, name)
		}
	}
	dirs, err := s.List(ctx, retiredEndpointPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing retired endpoints: %w", err)
	}
	for _, dir := range dirs {
		cluster := strings.TrimSuffix(dir, "/")
		retired, err := listRetiredEndpoints(ctx, s, cluster)
		if err != nil {
			return nil, err
		}
		for _, r := range retired {
			if r.Config.UseIssuer {
				users = append(users, fmt.Sprintf("%s (retired endpoint %s)", cluster, r.Config.endpointID()))
			}
		}
	}
	return users, nil
}

func (b *backend) issuerConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData, _ string) (*logical.Response, error) {
	cfg, err := getIssuerConfig(ctx, req.Storage)
	if err != nil || cfg == nil {
		return nil, err
	}
	keys, err := getIssuerKeySet(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		keys = &issuerKeySet{}
	}
	return &logical.Response{Data: issuerData(cfg, keys)}, nil
}

// issuerData is what issuer/config and issuer/rotate answer: the
// configuration and what is known of the keys, never key material.
func issuerData(cfg *issuerConfig, keys *issuerKeySet) map[string]interface{} {
	return map[string]interface{}{
		"issuer":            cfg.Issuer,
		"issuer_ca_cert":    cfg.IssuerCACert,
		"signing_algorithm": cfg.SigningAlgorithm,
		"rotation_period":   int64(cfg.RotationPeriod / time.Second),
		"token_ttl":         int64(cfg.TokenTTL / time.Second),
		"keys":              keys.describe(),
		"last_rotated_at":   formatTime(keys.LastRotatedAt),
		"next_rotation":     formatTime(keys.nextRotation(cfg)),
	}
}

func (b *backend) issuerRotate(ctx context.Context, req *logical.Request, _ *framework.FieldData, _ string) (*logical.Response, error) {
	b.issuer.mu.Lock()
	defer b.issuer.mu.Unlock()
	cfg, keys, err := b.rotateIssuerKeys(ctx, req.Storage, time.Now())
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: issuerData(cfg, keys)}, nil
}

// wellKnown serves a published document raw, as an API server expects it;
// without an issuer it answers 404 like any unknown path.
func (b *backend) wellKnown(render func(*issuerSnapshot, time.Time) ([]byte, error)) handler {
	return func(ctx context.Context, req *logical.Request, _ *framework.FieldData, _ string) (*logical.Response, error) {
		snap, err := b.issuerSnapshot(ctx, req.Storage)
		if err != nil {
			return nil, err
		}
		if !snap.configured() {
			return nil, nil
		}
		body, err := render(snap, time.Now())
		if err != nil {
			return nil, err
		}
		return &logical.Response{Data: map[string]interface{}{
			logical.HTTPContentType:        "application/json",
			logical.HTTPRawBody:            body,
			logical.HTTPStatusCode:         http.StatusOK,
			logical.HTTPCacheControlHeader: fmt.Sprintf("max-age=%d", issuerDocumentMaxAge),
		}}, nil
	}
}
