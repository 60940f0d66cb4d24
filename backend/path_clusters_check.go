package backend

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
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
		resource += fmt.Sprintf(" %q", p.attrs.Name)
	}
	if p.attrs.Namespace == "" {
		return fmt.Sprintf("%s %s cluster-wide", p.attrs.Verb, resource)
	}
	return fmt.Sprintf("%s %s in namespace %q", p.attrs.Verb, resource, p.attrs.Namespace)
}

// permissionsFor lists what issuing and revoking for role needs.
func permissionsFor(role *roleEntry) []requiredPermission {
	perm := func(verb, resource, subresource, name, ns string) requiredPermission {
		return requiredPermission{attrs: authorizationv1.ResourceAttributes{
			Verb: verb, Group: groupOf(resource), Resource: resource, Subresource: subresource, Name: name, Namespace: ns,
		}}
	}
	if !role.ephemeral() {
		ns := role.ServiceAccountNamespace
		return []requiredPermission{
			perm("create", "serviceaccounts", "token", role.ServiceAccountName, ns),
			perm("create", "secrets", "", "", ns),
			perm("delete", "secrets", "", "", ns),
		}
	}
	// Namespaces named by the role; "" (all namespaces) for "*" or a selector.
	var namespaces []string
	for _, ns := range role.AllowedNamespaces {
		if ns == anyNamespace {
			namespaces = nil
			break
		}
		namespaces = append(namespaces, ns)
	}
	if namespaces == nil || role.AllowedNamespaceSelector != "" {
		namespaces = []string{""}
	}
	var perms []requiredPermission
	for _, ns := range namespaces {
		perms = append(perms,
			perm("create", "serviceaccounts", "", "", ns),
			perm("delete", "serviceaccounts", "", "", ns),
			perm("create", "serviceaccounts", "token", "", ns),
			perm("create", "rolebindings", "", "", ns),
			perm("delete", "rolebindings", "", "", ns),
		)
		if role.mode() == modeGeneratedRole && role.KubernetesRoleType == kindRole {
			perms = append(perms, perm("create", "roles", "", "", ns), perm("delete", "roles", "", "", ns), perm("escalate", "roles", "", "", ns))
		}
		if role.mode() == modeExistingRole {
			// Binding a role needs bind on it, unless the plugin holds every
			// permission the role grants.
			perms = append(perms, perm("bind", strings.ToLower(role.KubernetesRoleType)+"s", "", role.KubernetesRoleName, ns))
		}
	}
	if role.mode() == modeGeneratedRole && role.KubernetesRoleType == kindClusterRole {
		perms = append(perms, perm("create", "clusterroles", "", "", ""), perm("delete", "clusterroles", "", "", ""), perm("escalate", "clusterroles", "", "", ""))
	}
	if role.AllowClusterRoleBinding {
		perms = append(perms, perm("create", "clusterrolebindings", "", "", ""), perm("delete", "clusterrolebindings", "", "", ""))
	}
	if role.AllowedNamespaceSelector != "" {
		perms = append(perms, perm("get", "namespaces", "", "", ""))
	}
	return perms
}

func groupOf(resource string) string {
	switch resource {
	case "roles", "clusterroles", "rolebindings", "clusterrolebindings":
		return rbacv1.GroupName
	}
	return ""
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
