package backend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

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

// issueRequest is a validated request for one credential.
type issueRequest struct {
	roleName  string
	role      *roleEntry
	ttl       time.Duration
	audiences []string
	warnings  []string
	// namespace holds the service account: the role's, or for ephemeral
	// roles the requested one once checked.
	namespace string
	// namespaces are those of kubernetes_namespaces (the first is
	// namespace); nil when the parameter was not used.
	namespaces         []string
	clusterRoleBinding bool
}

// leaseNamespaces are the namespaces an ephemeral lease binds in.
func (ir *issueRequest) leaseNamespaces() []string {
	if len(ir.namespaces) > 0 {
		return ir.namespaces
	}
	return []string{ir.namespace}
}

// roleHandler is a path callback for one role (creds/, kubeconfig/).
type roleHandler func(ctx context.Context, req *logical.Request, d *framework.FieldData, name string, role *roleEntry) (*logical.Response, error)

// forRole checks the request's fields and the role's name, loads the role
// (from the cache: these are the hot paths) and answers through respond.
func (b *backend) forRole(f roleHandler) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		if err := unknownFields(d); err != nil {
			return logical.ErrorResponse(err.Error()), nil
		}
		name := d.Get("name").(string)
		if err := validateVaultName("role", name); err != nil {
			return logical.ErrorResponse(err.Error()), nil
		}
		role, err := b.roles.get(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if role == nil {
			return logical.ErrorResponse("role %q does not exist", name), nil
		}
		resp, err := f(ctx, req, d, name, role)
		return respond(role.Cluster, resp, err)
	}
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

// parseIssueRequest validates the request against the role; its errors are
// the caller's to fix.
func parseIssueRequest(name string, role *roleEntry, d *framework.FieldData, mountMax time.Duration) (*issueRequest, error) {
	ir := &issueRequest{roleName: name, role: role, ttl: role.TTL, audiences: role.Audiences, namespace: role.ServiceAccountNamespace}
	_, nsAsked := d.GetOk("kubernetes_namespace")
	_, nssAsked := d.GetOk("kubernetes_namespaces")
	crb, crbAsked := d.GetOk("cluster_role_binding")
	if !role.ephemeral() && (nsAsked || nssAsked || crbAsked) {
		return nil, fmt.Errorf("role %q uses the existing service account %s/%s: kubernetes_namespace, kubernetes_namespaces and cluster_role_binding do not apply", name, role.ServiceAccountNamespace, role.ServiceAccountName)
	}
	if nsAsked && nssAsked {
		return nil, errors.New("give kubernetes_namespace or kubernetes_namespaces, not both")
	}
	if crbAsked {
		if err := parseClusterRoleBinding(ir, crb.(bool)); err != nil {
			return nil, err
		}
	}
	if nssAsked && ir.clusterRoleBinding {
		return nil, errors.New("cluster_role_binding=true binds cluster-wide, so it already spans every namespace: drop kubernetes_namespaces, or drop cluster_role_binding to bind in each listed namespace")
	}

	if v, ok := d.GetOk("ttl"); ok {
		// The framework already refuses negative durations with a 400.
		if requested := time.Duration(v.(int)) * time.Second; requested > 0 {
			ir.ttl = requested
		}
	}
	if ir.ttl > role.MaxTTL {
		ir.warnings = append(ir.warnings, fmt.Sprintf("ttl %s is above the role's max_ttl; capped at %s", ir.ttl, role.MaxTTL))
		ir.ttl = role.MaxTTL
	}
	if mountMax > 0 && ir.ttl > mountMax {
		ir.warnings = append(ir.warnings, fmt.Sprintf("ttl %s is above the mount's max lease TTL; capped at %s", ir.ttl, mountMax))
		ir.ttl = mountMax
	}

	if v, ok := d.GetOk("audiences"); ok {
		requested := v.([]string)
		if err := validateAudiences(requested); err != nil {
			return nil, err
		}
		// An audience is a grant: other systems accept tokens by it.
		if len(requested) > 0 && len(role.Audiences) == 0 {
			return nil, fmt.Errorf("role %q lists no audiences, so its tokens are for the Kubernetes API server only; an operator may allow others with the role's audiences", name)
		}
		for _, a := range requested {
			if !slices.Contains(role.Audiences, a) {
				return nil, fmt.Errorf("audience %q is not allowed by role %q (allowed: %s)", clip(a), name, strings.Join(role.Audiences, ", "))
			}
		}
		if len(requested) > 0 {
			ir.audiences = requested
		}
	}
	return ir, nil
}

// tokenExpirationSeconds is what the plugin asks TokenRequest for: the lease
// plus a margin, and never below Kubernetes' 10-minute minimum. Shorter
// leases are enforced by deleting the bound Secret.
func tokenExpirationSeconds(ttl time.Duration) int64 {
	const minimum = 600
	s := int64(math.Ceil((ttl + tokenExpirySkew).Seconds()))
	if s < minimum {
		return minimum
	}
	return s
}
