package backend

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
)

const (
	clusterCheckHelpSynopsis    = "Check that the plugin can reach a cluster and holds the rights its roles need."
	clusterCheckHelpDescription = `
Contacts the API server, reports its version, and asks it (with
SelfSubjectAccessReviews) whether the plugin's credential may create tokens
for each role's service account and create and delete Secrets in its
namespace. Nothing is created. missing_permissions names every right that is
missing; ok is true when none is.
`
)

func pathClusterCheck(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "clusters/" + namePathPattern + "/check$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "cluster",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeString, Description: "Name of the cluster.", Required: true},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.clusterCheck,
				Summary:      "Check connectivity and permissions.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "check"},
			},
		},
		HelpSynopsis:    clusterCheckHelpSynopsis,
		HelpDescription: clusterCheckHelpDescription,
	}
}

// requiredPermission is one right the issue or revoke flow relies on.
type requiredPermission struct {
	attrs authorizationv1.ResourceAttributes
}

func (p requiredPermission) String() string {
	resource := p.attrs.Resource
	if p.attrs.Subresource != "" {
		resource += "/" + p.attrs.Subresource
	}
	if p.attrs.Name != "" {
		return fmt.Sprintf("%s %s %q in namespace %q", p.attrs.Verb, resource, p.attrs.Name, p.attrs.Namespace)
	}
	return fmt.Sprintf("%s %s in namespace %q", p.attrs.Verb, resource, p.attrs.Namespace)
}

// permissionsFor lists what issuing and revoking for role needs.
func permissionsFor(role *roleEntry) []requiredPermission {
	ns := role.ServiceAccountNamespace
	return []requiredPermission{
		{attrs: authorizationv1.ResourceAttributes{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Name: role.ServiceAccountName, Namespace: ns}},
		{attrs: authorizationv1.ResourceAttributes{Verb: "create", Resource: "secrets", Namespace: ns}},
		{attrs: authorizationv1.ResourceAttributes{Verb: "delete", Resource: "secrets", Namespace: ns}},
	}
}

func (b *backend) clusterCheck(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateVaultName("cluster", name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	client, err := b.client(ctx, req.Storage, name)
	var notFound errClusterNotFound
	if errors.As(err, &notFound) {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err != nil {
		return nil, err
	}
	version, err := client.api.ServerVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("contacting the API server of cluster %q: %w", name, err)
	}

	roles, err := rolesUsingCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	checked := map[string]bool{}
	missing := []string{}
	for _, roleName := range sortedKeys(roles) {
		for _, perm := range permissionsFor(roles[roleName]) {
			key := perm.String()
			if checked[key] {
				continue
			}
			checked[key] = true
			allowed, err := client.api.Allowed(ctx, perm.attrs)
			if err != nil {
				return nil, fmt.Errorf("checking %s: %w", key, err)
			}
			if !allowed {
				missing = append(missing, key)
			}
		}
	}
	checkedList := sortedKeys(checked)
	sort.Strings(missing)
	return &logical.Response{Data: map[string]interface{}{
		"kubernetes_version":  version,
		"ok":                  len(missing) == 0,
		"checked_permissions": checkedList,
		"missing_permissions": missing,
		"roles":               sortedKeys(roles),
	}}, nil
}
