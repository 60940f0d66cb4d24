package backend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	tidyHelpSynopsis    = "Delete objects the plugin created whose lease has ended but which still exist."
	tidyHelpDescription = `
Normally revoking a lease deletes its objects. After 'vault lease revoke
-force', a revoke that failed for good, or a rollback that gave up, they stay.
tidy lists, on every cluster, the metadata (never the data) of the objects of
every kind the plugin creates (Secrets, ServiceAccounts, Roles, RoleBindings,
ClusterRoles, ClusterRoleBindings) labelled
app.kubernetes.io/managed-by=vault-plugin-scanner, page by page, in every
namespace a role of that cluster uses (cluster-wide for roles allowing any
namespace, and for cluster-scoped kinds) and in the namespace of the plugin's
own service account, where rotation keeps its Secrets. It deletes, by UID,
those that carry this mount's ownership mark (an HMAC, under a key only this
mount holds, over the object's kind, namespace, name, issue id, cluster and
expiry), are annotated with that cluster's name and whose expires-at is more
than grace ago. Labels and annotations anyone may write prove nothing: a
labelled object without a valid mark (someone else's, another mount's, or one
of the plugin's whose annotations were edited) is listed under unverified
(the first 100, with unverified_total counting all) and never deleted; an
object whose expires-at is missing or unreadable is left alone. Each run
looks at no more than 1000 pages of 100 objects per kind and namespace and at
no more than 256 namespaces per cluster and 32 clusters (later runs continue with the
others); what it did not look at is reported as skipped. It needs 'list' on
those kinds, beyond the least-privilege default; what it may not list is
reported as skipped. tidy/config makes the active node run it by itself.
`
	tidyConfigHelpSynopsis    = "Configure automatic tidy."
	tidyConfigHelpDescription = `
With enabled (the default), the active node runs tidy every interval (default
1h, at least 1m), deleting objects whose expires-at is more than grace
(default 1m) ago.
`
	tidyConfigStorageKey = "config/tidy"

	defaultTidyGrace    = time.Minute
	defaultTidyInterval = time.Hour
	minTidyInterval     = time.Minute
)

// tidyConfig is how automatic tidy runs.
type tidyConfig struct {
	Enabled  bool          `json:"enabled"`
	Interval time.Duration `json:"interval"`
	Grace    time.Duration `json:"grace"`
}

func defaultTidyConfig() tidyConfig {
	return tidyConfig{Enabled: true, Interval: defaultTidyInterval, Grace: defaultTidyGrace}
}

func pathTidy(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tidy$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationVerb:   "tidy",
			},
			Fields: map[string]*framework.FieldSchema{
				"grace": {
					Type:        framework.TypeDurationSecond,
					Description: "How long after its expiry an object is left alone. Default: tidy/config's grace.",
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.entry(noName, true, b.tidyNow),
					Summary:                     "Delete expired objects the plugin created.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    tidyHelpSynopsis,
			HelpDescription: tidyHelpDescription,
		},
		{
			Pattern: "tidy/config$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "tidy-configuration",
			},
			Fields: map[string]*framework.FieldSchema{
				"enabled":  {Type: framework.TypeBool, Description: "Run tidy automatically on the active node. Default true."},
				"interval": {Type: framework.TypeDurationSecond, Description: "Time between automatic runs. Default 1h, at least 1m."},
				"grace":    {Type: framework.TypeDurationSecond, Description: "How long after its expiry an object is left alone. Default 1m."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.entry(noName, false, b.tidyConfigRead),
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:     b.entry(noName, true, b.tidyConfigWrite),
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "configure"},
				},
			},
			HelpSynopsis:    tidyConfigHelpSynopsis,
			HelpDescription: tidyConfigHelpDescription,
		},
	}
}

func getTidyConfig(ctx context.Context, s logical.Storage) (tidyConfig, error) {
	cfg := defaultTidyConfig()
	entry, err := s.Get(ctx, tidyConfigStorageKey)
	if err != nil {
		return cfg, fmt.Errorf("reading tidy/config: %w", err)
	}
	if entry != nil {
		if err := entry.DecodeJSON(&cfg); err != nil {
			return cfg, fmt.Errorf("decoding tidy/config: %w", err)
		}
	}
	return cfg, nil
}

func (b *backend) tidyConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData, _ string) (*logical.Response, error) {
	cfg, err := getTidyConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"enabled":  cfg.Enabled,
		"interval": int64(cfg.Interval.Seconds()),
		"grace":    int64(cfg.Grace.Seconds()),
	}}, nil
}

func (b *backend) tidyConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData, _ string) (*logical.Response, error) {
	cfg, err := getTidyConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if v, ok := d.GetOk("enabled"); ok {
		cfg.Enabled = v.(bool)
	}
	if v, ok := d.GetOk("interval"); ok {
		cfg.Interval = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("grace"); ok {
		cfg.Grace = time.Duration(v.(int)) * time.Second
	}
	if cfg.Interval < minTidyInterval {
		return nil, userError{fmt.Errorf("interval must be at least %s", minTidyInterval)}
	}
	if cfg.Grace < 0 {
		return nil, userError{errors.New("grace must not be negative")}
	}
	entry, err := logical.StorageEntryJSON(tidyConfigStorageKey, cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding tidy/config: %w", err)
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing tidy/config: %w", err)
	}
	return nil, nil
}

func (b *backend) tidyNow(ctx context.Context, req *logical.Request, d *framework.FieldData, _ string) (*logical.Response, error) {
	cfg, err := getTidyConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	grace := cfg.Grace
	if v, ok := d.GetOk("grace"); ok {
		grace = time.Duration(v.(int)) * time.Second
	}
	if grace < 0 {
		return nil, userError{errors.New("grace must not be negative")}
	}
	result, err := b.tidy(ctx, req.Storage, time.Now().Add(-grace))
	if err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: result.data()}
	for _, e := range result.errors.withOverflow() {
		resp.AddWarning(e)
	}
	return resp, nil
}
