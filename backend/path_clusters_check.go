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
	rbacv1 "k8s.io/api/rbac/v1"
)

const (
	clusterCheckHelpSynopsis    = "Check that the plugin can reach a cluster and holds the rights its roles need."
	clusterCheckHelpDescription = `
Contacts the API server, reports its version, and asks it (with
SelfSubjectAccessReviews) whether the plugin's credential holds what each
role on the cluster needs to issue and revoke: for an existing service
account, create serviceaccounts/token for it and create and delete Secrets
in its namespace; for per-lease service accounts, create and delete
ServiceAccounts, bindings and generated Roles, tokens, and bind or escalate
as the mode needs (for roles scoped to targets also get and list pods), in
each namespace the role allows; and the rights of
self-rotation. Nothing is created. missing_permissions names every right
that is missing; role_errors names every role the plugin refuses to issue
for (its own identity, an unrestricted token right, a bound role granting
the plugin's own rights); ok is true when neither lists anything and every
right was checked (at most 2048 reviews; unchecked_permissions counts the
rest). identity is the user the API server authenticates the plugin as
(SelfSubjectReview). namespaces maps each namespace a role names (or its selector matches
now) to the rights missing there: an empty list means every role on the
cluster may issue in that namespace, alone or as one of
kubernetes_namespaces. Rights checked cluster-wide (roles allowing "*")
appear only in missing_permissions.
`
)

func pathClusterCheck(b *backend) *framework.Path {
	return clusterActionPath("check", "cluster", map[logical.Operation]framework.OperationHandler{
		logical.ReadOperation: &framework.PathOperation{
			Callback:     b.entry(clusterName, false, b.checkCluster),
			Summary:      "Check connectivity and permissions.",
			DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "check"},
		},
	}, clusterCheckHelpSynopsis, clusterCheckHelpDescription)
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
	perm := func(verb, kind, subresource, name, ns string) requiredPermission {
		return requiredPermission{attrs: kindAccess(verb, kind, subresource, name, ns)}
	}
	if !role.ephemeral() {
		ns := role.ServiceAccountNamespace
		return []requiredPermission{
			perm("create", kindServiceAccount, "token", role.ServiceAccountName, ns),
			perm("create", kindSecret, "", "", ns),
			perm("delete", kindSecret, "", "", ns),
		}
	}
	namespaces := role.namespaces(selected)
	var perms []requiredPermission
	for _, ns := range namespaces {
		perms = append(perms,
			perm("create", kindServiceAccount, "", "", ns),
			perm("delete", kindServiceAccount, "", "", ns),
			perm("create", kindServiceAccount, "token", "", ns),
			perm("create", kindRoleBinding, "", "", ns),
			perm("delete", kindRoleBinding, "", "", ns),
		)
		if role.generatesRole() {
			escalate := perm("escalate", kindRole, "", "", ns)
			escalate.orAll = ruleAttributes(role, ns)
			perms = append(perms, perm("create", kindRole, "", "", ns), perm("delete", kindRole, "", "", ns), escalate)
		}
		if role.mode() == modeTargets {
			// Targets are resolved by reading pods: named ones by get, a
			// selector by list. Pods are read, never created: not in the
			// kind table.
			perms = append(perms,
				requiredPermission{attrs: authorizationv1.ResourceAttributes{Verb: "get", Resource: "pods", Namespace: ns}},
				requiredPermission{attrs: authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods", Namespace: ns}},
			)
		}
		if role.mode() == modeExistingRole {
			// Binding a role needs bind on it, unless the plugin holds every
			// permission the role grants.
			perms = append(perms, perm("bind", role.KubernetesRoleType, "", role.KubernetesRoleName, ns))
		}
	}
	if role.mode() == modeGeneratedRole && role.KubernetesRoleType == kindClusterRole {
		escalate := perm("escalate", kindClusterRole, "", "", "")
		escalate.orAll = ruleAttributes(role, "")
		perms = append(perms, perm("create", kindClusterRole, "", "", ""), perm("delete", kindClusterRole, "", "", ""), escalate)
	}
	if role.AllowClusterRoleBinding {
		perms = append(perms, perm("create", kindClusterRoleBinding, "", "", ""), perm("delete", kindClusterRoleBinding, "", "", ""))
	}
	if role.AllowedNamespaceSelector != "" {
		// Namespaces are read, never created: not in the kind table.
		// get matches a requested namespace; list resolves the selector for
		// check and clusters/<name>/rbac.
		perms = append(perms,
			requiredPermission{attrs: authorizationv1.ResourceAttributes{Verb: "get", Resource: "namespaces"}},
			requiredPermission{attrs: authorizationv1.ResourceAttributes{Verb: "list", Resource: "namespaces"}})
	}
	return perms
}

// ruleAttributes expands generated_role_rules into the permissions they
// grant in ns; nil when a rule cannot be checked that way (nonResourceURLs).
func ruleAttributes(role *roleEntry, ns string) []authorizationv1.ResourceAttributes {
	var rules []rbacv1.PolicyRule
	var err error
	if role.mode() == modeTargets {
		// The plugin may create a Role naming any pods only if it holds
		// the templates' rights on every pod of ns (or escalate).
		rules, err = targetRuleTemplates(role)
	} else {
		rules, err = parseRules(role.GeneratedRoleRules, role.KubernetesRoleType)
	}
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

func (b *backend) checkCluster(ctx context.Context, req *logical.Request, _ *framework.FieldData, name string) (*logical.Response, error) {
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
	notes := []string{}
	// Whom the API server takes the plugin for (SelfSubjectReview): in
	// issuer mode, the username its AuthenticationConfiguration maps.
	identity, err := client.api.WhoAmI(ctx)
	if err != nil {
		notes = append(notes, fmt.Sprintf("the API server did not say whom it authenticates the plugin as (SelfSubjectReview): %v", err))
	}
	budget := &reviewBudget{left: maxCheckReviews}
	checked := map[string]bool{}
	seen := map[string]bool{}
	selectors := newSelectorMatches(client.api)
	missing := []string{}
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
		selected, why := selectors.of(ctx, role)
		if why != "" {
			notes = append(notes, fmt.Sprintf("role %s: %s; its rights were checked cluster-wide", roleName, why))
		}
		for _, perm := range permissionsFor(role, selected) {
			key := perm.String()
			ns := perm.attrs.Namespace
			if ns != "" && perNamespace[ns] == nil {
				perNamespace[ns] = []string{}
			}
			// A right with an alternative (escalate, or hold every right the
			// role's rules grant) is the role's own: two roles share its
			// name, not its alternative.
			seenKey := key
			if len(perm.orAll) > 0 {
				seenKey += "\x00" + roleName
			}
			if seen[seenKey] {
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
			seen[seenKey], checked[key] = true, true
			if !allowed && !slices.Contains(missing, key) {
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
		"identity":                          identity,
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
	if cfg != nil && cfg.UseIssuer {
		return nil, "issuer mode: the plugin stores no Kubernetes credential, rotate-root does not apply (the issuer's keys rotate with issuer/rotate)"
	}
	if cfg == nil || cfg.inCluster() {
		return nil, "in-cluster credentials: the kubelet rotates the pod's token, rotate-root does not apply"
	}
	claims, err := parseTokenClaims(cfg.JWT)
	ns, sa, ok := claims.serviceAccount()
	if err != nil || !ok {
		return nil, "the stored service_account_jwt carries no service-account claims: rotate-root cannot tell which service account to rotate"
	}
	perm := func(verb, kind, sub, name string) requiredPermission {
		return requiredPermission{attrs: kindAccess(verb, kind, sub, name, ns)}
	}
	return []requiredPermission{
		perm("create", kindServiceAccount, "token", sa),
		perm("create", kindSecret, "", ""),
		perm("delete", kindSecret, "", ""),
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

// cleanupPermissionsFor are the rights that let the plugin clean up after a
// create whose answer was lost (a timeout): it reads each kind an ephemeral
// role's leases create, where it creates it, and deletes the object only if
// its owner mark verifies. Without them such an object is left to tidy, so
// check does not require them; clusters/<name>/rbac grants them. Roles on
// an existing service account need none (their WAL entry holds the UID),
// and get on Secrets would reveal every Secret's data.
func cleanupPermissionsFor(role *roleEntry, perms []requiredPermission) []requiredPermission {
	if !role.ephemeral() {
		return nil
	}
	var out []requiredPermission
	for _, p := range perms {
		if p.attrs.Verb != "create" || p.attrs.Subresource != "" || p.attrs.Name != "" {
			continue
		}
		for _, k := range objectKinds {
			if k.group == p.attrs.Group && k.resource == p.attrs.Resource && k.name != kindSecret {
				get := p
				get.attrs.Verb = "get"
				get.orAll = nil
				out = append(out, get)
			}
		}
	}
	return out
}
