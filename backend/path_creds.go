package backend

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	credsHelpSynopsis    = "Issue a short-lived service-account token and kubeconfig."
	credsHelpDescription = `
Reading (GET) or writing (POST/PUT) creds/<role> requests a token for the
role's service account with the TokenRequest API, bound to a per-lease Secret,
and returns it with a ready kubeconfig as a non-renewable lease. Revoking the
lease, or its expiry, deletes the Secret and so invalidates the token, also
for leases shorter than Kubernetes' 10-minute token minimum. Optional
parameters (query string on GET, body on write): ttl, audiences; for
ephemeral roles kubernetes_namespace or kubernetes_namespaces (one per-lease
service account in the first, bound in each), and cluster_role_binding.
`
)

func pathCreds(b *backend) []*framework.Path {
	op := func(summary string) *framework.PathOperation {
		return &framework.PathOperation{
			Callback:                    b.forRole(b.issueFor),
			Summary:                     summary,
			DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "generate"},
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
		}
	}
	return []*framework.Path{{
		Pattern: "creds/" + namePathPattern,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "credentials",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeString, Description: "Name of the role.", Required: true},
			"ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "Lease TTL. Default: the role's ttl; capped (with a warning) by the role's max_ttl and the mount's max lease TTL.",
			},
			"audiences": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Token audiences; a subset of the role's when the role sets them. Default: the role's.",
			},
			"kubernetes_namespace": {
				Type:        framework.TypeString,
				Description: "Ephemeral roles: the namespace for the per-lease service account; must be allowed by the role. Default: the role's only allowed namespace.",
			},
			"kubernetes_namespaces": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Ephemeral roles: several namespaces (comma-separated, each allowed by the role, at most 32): one per-lease service account in the first, bound in each. Excludes kubernetes_namespace and cluster_role_binding.",
			},
			"cluster_role_binding": {
				Type:        framework.TypeBool,
				Description: "Ephemeral ClusterRole roles with allow_cluster_role_binding: bind cluster-wide instead of in kubernetes_namespace.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			// GET works because Vault Agent, vault-action, GitLab and Jenkins only read.
			logical.ReadOperation:   op("Issue a credential (GET)."),
			logical.UpdateOperation: op("Issue a credential."),
		},
		HelpSynopsis:    credsHelpSynopsis,
		HelpDescription: credsHelpDescription,
	}}
}

func (b *backend) issueFor(ctx context.Context, req *logical.Request, d *framework.FieldData, name string, role *roleEntry) (*logical.Response, error) {
	ir, err := parseIssueRequest(name, role, d, b.System().MaxLeaseTTL())
	if err != nil {
		return nil, userError{err}
	}
	client, err := b.client(ctx, req.Storage, role.Cluster)
	var notFound errClusterNotFound
	if errors.As(err, &notFound) {
		return nil, userError{fmt.Errorf("role %q uses cluster %q, which is not configured", name, role.Cluster)}
	}
	if err != nil {
		return nil, err
	}
	if role.ephemeral() {
		if requested, ok := d.GetOk("kubernetes_namespaces"); ok {
			if ir.namespaces, err = resolveNamespaces(ctx, client.api, name, role, requested.([]string)); err != nil {
				return nil, err
			}
			ir.namespace = ir.namespaces[0]
		} else if ir.namespace, err = resolveNamespace(ctx, client.api, name, role, d.Get("kubernetes_namespace").(string)); err != nil {
			return nil, err
		}
	}
	txn, err := b.planLease(req, client, ir)
	if err != nil {
		return nil, err
	}
	return txn.run(ctx, req)
}
