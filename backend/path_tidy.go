package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	tidyHelpSynopsis    = "Delete bound Secrets whose lease has ended but which still exist."
	tidyHelpDescription = `
Normally revoking a lease deletes its bound Secret. After 'vault lease revoke
-force', or a revoke that failed for good, the Secret stays. tidy lists the
plugin's Secrets (label app.kubernetes.io/managed-by=vault-plugin-scanner) in
every namespace a role uses and deletes those whose expires-at annotation is
more than grace ago. It needs 'list' on secrets in those namespaces, beyond
the least-privilege default.
`
	defaultTidyGrace = time.Minute
)

func pathTidy(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "tidy$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "tidy",
		},
		Fields: map[string]*framework.FieldSchema{
			"grace": {
				Type:        framework.TypeDurationSecond,
				Description: "How long after its expiry a Secret is left alone. Default 1m.",
				Default:     int(defaultTidyGrace.Seconds()),
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.tidy,
				Summary:                     "Delete expired bound Secrets.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    tidyHelpSynopsis,
		HelpDescription: tidyHelpDescription,
	}}
}

func (b *backend) tidy(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(d); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	grace := time.Duration(d.Get("grace").(int)) * time.Second
	if grace < 0 {
		return logical.ErrorResponse("grace must not be negative"), nil
	}
	roleNames, err := req.Storage.List(ctx, roleStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	// cluster -> namespaces the plugin creates Secrets in.
	targets := map[string]map[string]bool{}
	for _, name := range roleNames {
		role, err := getRole(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if role == nil || role.ephemeral() {
			continue // ephemeral leases own ServiceAccounts, not bound Secrets
		}
		if targets[role.Cluster] == nil {
			targets[role.Cluster] = map[string]bool{}
		}
		targets[role.Cluster][role.ServiceAccountNamespace] = true
	}

	cutoff := time.Now().Add(-grace)
	deleted := 0
	for _, cluster := range sortedKeys(targets) {
		client, err := b.client(ctx, req.Storage, cluster)
		if err != nil {
			return nil, err
		}
		for _, ns := range sortedKeys(targets[cluster]) {
			secrets, err := client.api.ListManagedSecrets(ctx, ns)
			if err != nil {
				return nil, fmt.Errorf("listing bound Secrets in %s/%s: %w", cluster, ns, err)
			}
			for _, s := range secrets {
				if s.Annotations[clusterAnnotation] != cluster {
					continue
				}
				expiresAt, err := time.Parse(time.RFC3339, s.Annotations[expiresAtAnnotation])
				if err != nil || expiresAt.After(cutoff) {
					continue
				}
				if err := client.api.DeleteObject(ctx, refOf(kindSecret, &s)); err != nil {
					return nil, fmt.Errorf("deleting expired bound Secret %s/%s: %w", ns, s.Name, err)
				}
				deleted++
			}
		}
	}
	b.Logger().Info("tidy finished", "deleted", deleted)
	return &logical.Response{Data: map[string]interface{}{"deleted": deleted}}, nil
}
