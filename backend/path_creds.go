package backend

import (
	"context"

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
service account in the first, bound in each), and cluster_role_binding; a
role of an existing service account accepts kubernetes_namespace equal to
its service_account_namespace and cluster_role_binding=false, which restate
it (Terraform's vault_kubernetes_service_account_token sends both), and
refuses any other value; for
roles scoped to targets, targets or target_selector: the credential can
reach exactly the pods they resolve to at issue, listed in the response's
targets.
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
				Description: "Ephemeral roles: the namespace for the per-lease service account; must be allowed by the role. Default: the role's only allowed namespace. Roles of an existing service account accept only its own namespace.",
			},
			"kubernetes_namespaces": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Ephemeral roles: several namespaces (comma-separated, each allowed by the role, at most 32): one per-lease service account in the first, bound in each. Excludes kubernetes_namespace and cluster_role_binding.",
			},
			"targets": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Roles scoped to targets: the pods to scan, comma-separated: names in kubernetes_namespace (default: the role's only allowed namespace) or namespace/pod; at most the role's max_targets, each existing and in a namespace the role allows. Excludes target_selector and kubernetes_namespaces.",
			},
			"target_selector": {
				Type:        framework.TypeString,
				Description: "Roles scoped to targets: a label selector (app=web,tier in (a,b)) resolved at issue to the pods it matches in kubernetes_namespace or each of kubernetes_namespaces; between 1 and max_targets pods. Pods created later are not covered.",
			},
			"cluster_role_binding": {
				Type:        framework.TypeBool,
				Description: "Ephemeral ClusterRole roles with allow_cluster_role_binding: bind cluster-wide instead of in kubernetes_namespace. false is accepted by every role.",
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
	if err != nil {
		return nil, err
	}
	if role.mode() == modeTargets {
		// Every target is resolved, and found allowed, before anything is
		// created.
		tr, err := parseTargets(name, role, d)
		if err != nil {
			return nil, err
		}
		if ir.targets, err = tr.resolve(ctx, client.api, name, role); err != nil {
			return nil, err
		}
		ir.namespaces = targetNamespaces(ir.targets)
		ir.namespace = ir.namespaces[0]
	} else if role.ephemeral() {
		namespaces, bySelector, list, err := requestedNamespaces(name, role, d)
		if err != nil {
			return nil, err
		}
		for _, ns := range bySelector {
			if err := matchSelector(ctx, client.api, name, role, ns); err != nil {
				return nil, err
			}
		}
		ir.namespace = namespaces[0]
		if list {
			ir.namespaces = namespaces
		}
	}
	txn, err := b.planLease(req, client, ir)
	if err != nil {
		return nil, err
	}
	return txn.run(ctx, req)
}
