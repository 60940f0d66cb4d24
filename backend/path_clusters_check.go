package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

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
missing; ok is true when none is. namespaces maps each namespace a role names
(or its selector matches now) to the rights missing there: an empty list
means every role on the cluster may issue in that namespace, alone or as one
of kubernetes_namespaces. Rights checked cluster-wide (roles allowing "*") appear only in
missing_permissions.
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

// requiredPermission is one right the issue or revoke flow relies on. It is
// also satisfied when every permission in orAll is held: Kubernetes lets a
// user without escalate create a Role whose rules it holds itself.
type requiredPermission struct {
	attrs authorizationv1.ResourceAttributes
	orAll []authorizationv1.ResourceAttributes
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
// selected are the namespaces the role's selector matches now; nil when
// they could not be listed, in which case the rights are checked
// cluster-wide.
func permissionsFor(role *roleEntry, selected []string) []requiredPermission {
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
	// Namespaces named or selected by the role; "" (all namespaces) for "*"
	// or a selector whose matches could not be listed.
	namespaces := append([]string(nil), role.AllowedNamespaces...)
	if role.AllowedNamespaceSelector != "" {
		if selected == nil {
			namespaces = append(namespaces, anyNamespace)
		}
		namespaces = append(namespaces, selected...)
	}
	if slices.Contains(namespaces, anyNamespace) {
		namespaces = []string{""}
	}
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
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
			escalate := perm("escalate", "roles", "", "", ns)
			escalate.orAll = ruleAttributes(role, ns)
			perms = append(perms, perm("create", "roles", "", "", ns), perm("delete", "roles", "", "", ns), escalate)
		}
		if role.mode() == modeExistingRole {
			// Binding a role needs bind on it, unless the plugin holds every
			// permission the role grants.
			perms = append(perms, perm("bind", objectKinds[role.KubernetesRoleType].resource, "", role.KubernetesRoleName, ns))
		}
	}
	if role.mode() == modeGeneratedRole && role.KubernetesRoleType == kindClusterRole {
		escalate := perm("escalate", "clusterroles", "", "", "")
		escalate.orAll = ruleAttributes(role, "")
		perms = append(perms, perm("create", "clusterroles", "", "", ""), perm("delete", "clusterroles", "", "", ""), escalate)
	}
	if role.AllowClusterRoleBinding {
		perms = append(perms, perm("create", "clusterrolebindings", "", "", ""), perm("delete", "clusterrolebindings", "", "", ""))
	}
	if role.AllowedNamespaceSelector != "" {
		perms = append(perms, perm("get", "namespaces", "", "", ""))
	}
	return perms
}

// ruleAttributes expands generated_role_rules into the permissions they
// grant in ns; nil when a rule cannot be checked that way (nonResourceURLs).
func ruleAttributes(role *roleEntry, ns string) []authorizationv1.ResourceAttributes {
	rules, err := parseRules(role.GeneratedRoleRules, role.KubernetesRoleType)
	if err != nil || rulePermissionCount(rules) > maxRulePermissions {
		// Roles stored before the bound was enforced: too many to check.
		return nil
	}
	var out []authorizationv1.ResourceAttributes
	for _, rule := range rules {
		if len(rule.NonResourceURLs) > 0 {
			return nil
		}
		names := rule.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, verb := range rule.Verbs {
			for _, group := range rule.APIGroups {
				for _, res := range rule.Resources {
					resource, sub, _ := strings.Cut(res, "/")
					for _, name := range names {
						out = append(out, authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Subresource: sub, Name: name, Namespace: ns})
					}
				}
			}
		}
	}
	return out
}

// groupOf is the API group of a resource the plugin creates or uses.
func groupOf(resource string) string {
	for _, k := range objectKinds {
		if k.resource == resource {
			return k.group
		}
	}
	return ""
}

func (b *backend) clusterCheck(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateVaultName("cluster", name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	resp, err := b.checkCluster(ctx, req, name)
	return respond(name, resp, err)
}

// maxCheckReviews bounds the access reviews one check sends: the roles
// and their rules are written by roles/ writers, and an unbounded check
// would let one role write stall or crash every operator's check.
const maxCheckReviews = 2048

// reviewBudget counts the access reviews a check may still send.
type reviewBudget struct{ left int }

var errReviewBudget = errors.New("access review budget exhausted")

func (r *reviewBudget) allowed(ctx context.Context, api kubeAPI, attrs authorizationv1.ResourceAttributes) (bool, error) {
	if r.left <= 0 {
		return false, errReviewBudget
	}
	r.left--
	return api.Allowed(ctx, attrs)
}

func (b *backend) checkCluster(ctx context.Context, req *logical.Request, name string) (*logical.Response, error) {
	client, err := b.client(ctx, req.Storage, name)
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
	budget := &reviewBudget{left: maxCheckReviews}
	checked := map[string]bool{}
	missing := []string{}
	notes := []string{}
	unchecked := 0
	// roleErrors: roles the plugin refuses to issue for, and why.
	roleErrors := map[string]interface{}{}
	// perNamespace: for each namespace a role names, what is missing there.
	perNamespace := map[string][]string{}
	for _, roleName := range sortedKeys(roles) {
		role := roles[roleName]
		if err := b.checkGrantable(ctx, req.Storage, client, roleName, role, listedNamespaces(role)); err != nil {
			var user userError
			if !errors.As(err, &user) {
				return nil, err
			}
			roleErrors[roleName] = err.Error()
		}
		var selected []string
		if role.AllowedNamespaceSelector != "" {
			selected, err = client.api.ListNamespaces(ctx, role.AllowedNamespaceSelector)
			switch {
			case err != nil:
				selected = nil
				notes = append(notes, fmt.Sprintf("role %s: cannot list the namespaces its selector matches (%v); its rights were checked cluster-wide", roleName, err))
			case len(selected) > maxAllowedNamespaces:
				selected = nil
				notes = append(notes, fmt.Sprintf("role %s: its selector matches more than %d namespaces; its rights were checked cluster-wide", roleName, maxAllowedNamespaces))
			}
		}
		for _, perm := range permissionsFor(role, selected) {
			key := perm.String()
			ns := perm.attrs.Namespace
			if ns != "" && perNamespace[ns] == nil {
				perNamespace[ns] = []string{}
			}
			if checked[key] {
				continue
			}
			allowed, err := b.permissionHeld(ctx, client.api, budget, perm)
			if errors.Is(err, errReviewBudget) {
				unchecked++
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("checking %s: %w", key, err)
			}
			checked[key] = true
			if !allowed {
				missing = append(missing, key)
				if ns != "" {
					perNamespace[ns] = append(perNamespace[ns], key)
				}
			}
		}
	}
	if unchecked > 0 {
		notes = append(notes, fmt.Sprintf("check stops after %d access reviews: %d permissions were not checked (the roles of this cluster name too many namespaces or rules)", maxCheckReviews, unchecked))
	}
	cfg, err := getCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	selfPermitted := false
	switch perms, why := selfRotationPermissions(cfg); {
	case why != "":
		notes = append(notes, why)
	default:
		selfPermitted = true
		for _, perm := range perms {
			key := perm.String()
			allowed, err := b.permissionHeld(ctx, client.api, &reviewBudget{left: 1}, perm)
			if err != nil {
				return nil, fmt.Errorf("checking %s: %w", key, err)
			}
			if allowed {
				continue
			}
			selfPermitted = false
			if cfg.RotationPeriod > 0 {
				// Automatic rotation relies on it: a missing right is a fault.
				missing = append(missing, key)
			} else {
				notes = append(notes, "rotate-root would fail: the plugin may not "+key)
			}
		}
		for _, perm := range perms {
			checked[perm.String()] = true
		}
	}
	sort.Strings(missing)
	namespaces := make(map[string]interface{}, len(perNamespace))
	for ns, m := range perNamespace {
		sort.Strings(m)
		namespaces[ns] = m
	}
	return &logical.Response{Data: map[string]interface{}{
		"namespaces":                        namespaces,
		"kubernetes_version":                version,
		"ok":                                len(missing) == 0 && len(roleErrors) == 0 && unchecked == 0,
		"checked_permissions":               sortedKeys(checked),
		"missing_permissions":               missing,
		"unchecked_permissions":             unchecked,
		"role_errors":                       roleErrors,
		"notes":                             notes,
		"roles":                             sortedKeys(roles),
		"self_rotation_permitted":           selfPermitted,
		"service_account_jwt_expires_at":    formatTime(cfg.JWTExpiresAt),
		"service_account_jwt_credential_id": cfg.JWTCredentialID,
	}}, nil
}

// selfRotationPermissions lists what rotate-root needs in the plugin's own
// namespace, or says why rotation does not apply to cfg.
func selfRotationPermissions(cfg *clusterConfig) ([]requiredPermission, string) {
	if cfg == nil || cfg.inCluster() {
		return nil, "in-cluster credentials: the kubelet rotates the pod's token, rotate-root does not apply"
	}
	claims, err := parseTokenClaims(cfg.JWT)
	ns, sa, ok := claims.serviceAccount()
	if err != nil || !ok {
		return nil, "the stored service_account_jwt carries no service-account claims: rotate-root cannot tell which service account to rotate"
	}
	perm := func(verb, resource, sub, name string) requiredPermission {
		return requiredPermission{attrs: authorizationv1.ResourceAttributes{Verb: verb, Resource: resource, Subresource: sub, Name: name, Namespace: ns}}
	}
	return []requiredPermission{
		perm("create", "serviceaccounts", "token", sa),
		perm("create", "secrets", "", ""),
		perm("delete", "secrets", "", ""),
	}, ""
}

// permissionHeld asks whether perm is held, spending reviews from budget;
// it fails with errReviewBudget when the budget runs out before an answer.
func (b *backend) permissionHeld(ctx context.Context, api kubeAPI, budget *reviewBudget, perm requiredPermission) (bool, error) {
	allowed, err := budget.allowed(ctx, api, perm.attrs)
	if err != nil || allowed || len(perm.orAll) == 0 {
		return allowed, err
	}
	for _, attrs := range perm.orAll {
		if allowed, err := budget.allowed(ctx, api, attrs); err != nil || !allowed {
			return false, err
		}
	}
	return true, nil
}
