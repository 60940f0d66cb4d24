package backend

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	rolesHelpSynopsis    = "Map a role name to a cluster and an identity: an existing service account, or a per-lease one bound to an existing or generated role."
	rolesHelpDescription = `
A role names the cluster and how each lease gets its identity: an existing
service account (service_account_name, whose RBAC defines what tokens may
do; the token is bound to a per-lease Secret), or per lease a ServiceAccount
bound to an existing Role or ClusterRole (kubernetes_role_name) or to one
generated from rules (generated_role_rules), in the namespaces the role
allows, or scoped to targets (target_profiles, target_rules, max_targets):
per lease a Role in each namespace of the request's pods whose rules name
exactly those pods. It also sets the default and maximum lease TTL, the token
audiences, the kubeconfig's namespace, and extra labels and annotations.
A role never yields the plugin's own identity or rights.
`
	rolesListHelpSynopsis = "List the roles."
)

func roleFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":                      {Type: framework.TypeString, Description: "Name of the role.", Required: true},
		"cluster":                   {Type: framework.TypeString, Description: "Required. Name of a clusters/ entry."},
		"service_account_name":      {Type: framework.TypeString, Description: "Mode 1: an existing service account whose RBAC defines what issued tokens may do. Set exactly one of service_account_name, kubernetes_role_name, generated_role_rules."},
		"service_account_namespace": {Type: framework.TypeString, Description: "With service_account_name (required): its namespace; the per-lease Secret is created there."},
		"kubernetes_role_name": {
			Type:        framework.TypeString,
			Description: "Mode 2: an existing Role or ClusterRole (kubernetes_role_type). Per lease the plugin creates a ServiceAccount and a RoleBinding (or ClusterRoleBinding) to it. Refused at issue when the role grants a right of the plugin's own work (tokens, Secrets, ServiceAccount or RBAC writes, bind, escalate, impersonate).",
		},
		"kubernetes_role_type": {
			Type:        framework.TypeString,
			Description: "Role (default) or ClusterRole: the kind of kubernetes_role_name, or of the role generated from generated_role_rules. Roles scoped to targets: Role only.",
		},
		"generated_role_rules": {
			Type:        framework.TypeString,
			Description: "Mode 3: RBAC rules as YAML or JSON (a list, or {rules: [...]}), expanding to at most 1024 permissions (verbs x apiGroups x resources x resourceNames). Per lease the plugin creates a Role (or ClusterRole) with them, a ServiceAccount and a binding. Rules granting a right of the plugin's own work (serviceaccounts/token, secrets, ServiceAccount or RBAC writes, certificatesigningrequests, bind, escalate, impersonate) are refused.",
		},
		"target_profiles": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Mode 4, scoped to targets: named access each target pod gets. exec: pods get, pods/exec create, pods/log get (CINC Auditor / InSpec over kubectl exec). debug: pods get, list, watch, pods/ephemeralcontainers update, patch, pods/attach create, pods/log get (kubectl debug). Per lease the plugin creates a ServiceAccount and, in each target namespace, a Role whose rules name exactly the request's resolved pods, and its RoleBinding.",
		},
		"target_rules": {
			Type:        framework.TypeString,
			Description: "Mode 4: rule templates as YAML or JSON (a list, or {rules: [...]}) over pods and its subresources in the core group (apiGroups [\"\"]); the plugin fills in resourceNames, so setting them is refused. Added to target_profiles' rules.",
		},
		"max_targets": {
			Type:        framework.TypeInt,
			Description: "Mode 4: the most pods one credential may name or a target_selector may match. Default 10, at most 50.",
		},
		"allowed_kubernetes_namespaces": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Ephemeral modes: namespaces a request may ask for (kubernetes_namespace), at most 128; \"*\" allows any. With exactly one, it is the default.",
		},
		"allowed_kubernetes_namespace_selector": {
			Type:        framework.TypeString,
			Description: "Ephemeral modes: label selector (YAML/JSON LabelSelector or \"k=v,...\") a requested namespace's labels must match. Needs get on namespaces.",
		},
		"allow_cluster_role_binding": {
			Type:        framework.TypeBool,
			Description: "With kubernetes_role_type=ClusterRole: requests may ask (cluster_role_binding=true) for a ClusterRoleBinding instead of a RoleBinding.",
		},
		"name_template": {
			Type:        framework.TypeString,
			Description: "Ephemeral modes: Go template (at most 1024 bytes) for the names of created objects; every name it renders, at write and at each issue, must be a DNS-1123 label of at most 63 characters holding an uncut {{ random 8 }} or longer. Fields .RoleName .DisplayName .Namespace; functions random N, dns N s, lowercase, truncate N s, unix_time, eq, ne, and, or, not; if/else, with and variables. range, template, define, block and the other builtins (printf, index, len, ...) are refused. Default: " + defaultNameTemplate,
		},
		"ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Default lease TTL; may be below Kubernetes' 10-minute token minimum. Default 15m.",
		},
		"max_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Upper bound for a request's ttl (also capped by the mount's max lease TTL). Default 1h. At most 4294967266 s: TokenRequest's 2^32 s less the 30 s the plugin adds to each token.",
		},
		"audiences": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Token audiences, at most 16 of at most 256 bytes each, no empty value or duplicate. Default: the API server's own. Requests may ask for a subset.",
		},
		"kubeconfig_namespace": {
			Type:        framework.TypeString,
			Description: "Namespace of the kubeconfig's context. Default: service_account_namespace.",
		},
		"extra_labels": {
			Type:        framework.TypeKVPairs,
			Description: "Labels added to every object the plugin creates. At most 64, checked with Kubernetes' own label rules; keys under kubernetes.io/, k8s.io/ and their subdomains (any case) and the plugin's own (app.kubernetes.io/managed-by, vault-plugin-scanner/) are refused.",
		},
		"extra_annotations": {
			Type:        framework.TypeKVPairs,
			Description: "Annotations added to every object the plugin creates. At most 64 and 64 KiB of keys and values, so the plugin's own annotations always fit; keys under kubernetes.io/, k8s.io/ and their subdomains (any case) and vault-plugin-scanner/ are refused.",
		},
	}
}

func pathRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "roles/" + namePathPattern,
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "role",
			},
			Fields:         roleFields(),
			ExistenceCheck: b.roleExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{
					Callback:     b.entry(roleName, true, b.roleWrite),
					Summary:      "Create a role.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "write"},
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:     b.entry(roleName, true, b.roleWrite),
					Summary:      "Update a role.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "write"},
				},
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.entry(roleName, false, b.roleRead),
					Summary:      "Read a role.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:     b.entry(roleName, false, b.roleDelete),
					Summary:      "Delete a role. Outstanding leases stay revocable.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "delete"},
				},
			},
			HelpSynopsis:    rolesHelpSynopsis,
			HelpDescription: rolesHelpDescription,
		},
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.entry(noName, false, b.roleList),
					Summary:      "List roles.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list"},
				},
			},
			HelpSynopsis:    rolesListHelpSynopsis,
			HelpDescription: rolesListHelpSynopsis,
		},
	}
}

func (b *backend) roleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateVaultName("role", name) != nil {
		return false, nil
	}
	role, err := getRole(ctx, req.Storage, name)
	return role != nil, err
}

func (b *backend) roleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	role, err := getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		role = &roleEntry{TTL: defaultRoleTTL, MaxTTL: defaultRoleMaxTTL}
	}
	if err := applyRoleFields(role, d); err != nil {
		return nil, userError{err}
	}
	b.clusterInUse.RLock()
	defer b.clusterInUse.RUnlock()
	cluster, err := getCluster(ctx, req.Storage, role.Cluster)
	if err != nil {
		return nil, err
	}
	if cluster == nil {
		return nil, errClusterNotFound(role.Cluster)
	}
	if err := b.checkNotSelf(ctx, req.Storage, name, role, cluster); err != nil {
		return nil, err
	}

	resp := &logical.Response{}
	if mountMax := b.System().MaxLeaseTTL(); mountMax > 0 && role.MaxTTL > mountMax {
		resp.AddWarning(fmt.Sprintf("max_ttl %s is above the mount's max lease TTL %s; leases will be capped at %s", role.MaxTTL, mountMax, mountMax))
	}
	if role.mode() == modeGeneratedRole && role.KubernetesRoleType == kindClusterRole && len(role.ExtraLabels) > 0 {
		resp.AddWarning("extra_labels are not set on the generated ClusterRole (only on the other objects): an aggregated ClusterRole selecting them would grant its rules to subjects without a lease")
	}
	if len(resp.Warnings) == 0 {
		resp = nil
	}
	entry, err := logical.StorageEntryJSON(roleStoragePrefix+name, role)
	if err != nil {
		return nil, fmt.Errorf("encoding role %q: %w", name, err)
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing role %q: %w", name, err)
	}
	b.roles.invalidate(name)
	return resp, nil
}

// applyRoleFields merges the request into role and validates the result.
func applyRoleFields(role *roleEntry, d *framework.FieldData) error {
	str := func(field string, dst *string) {
		if v, ok := d.GetOk(field); ok {
			*dst = strings.TrimSpace(v.(string))
		}
	}
	str("cluster", &role.Cluster)
	str("service_account_name", &role.ServiceAccountName)
	str("service_account_namespace", &role.ServiceAccountNamespace)
	str("kubeconfig_namespace", &role.KubeconfigNamespace)
	str("kubernetes_role_name", &role.KubernetesRoleName)
	str("kubernetes_role_type", &role.KubernetesRoleType)
	str("allowed_kubernetes_namespace_selector", &role.AllowedNamespaceSelector)
	str("name_template", &role.NameTemplate)
	if v, ok := d.GetOk("generated_role_rules"); ok {
		role.GeneratedRoleRules = v.(string)
	}
	if v, ok := d.GetOk("allowed_kubernetes_namespaces"); ok {
		role.AllowedNamespaces = v.([]string)
	}
	if v, ok := d.GetOk("allow_cluster_role_binding"); ok {
		role.AllowClusterRoleBinding = v.(bool)
	}
	if v, ok := d.GetOk("target_profiles"); ok {
		role.TargetProfiles = v.([]string)
	}
	if v, ok := d.GetOk("target_rules"); ok {
		role.TargetRules = v.(string)
	}
	if v, ok := d.GetOk("max_targets"); ok {
		role.MaxTargets = v.(int)
	} else if role.targetScoped() && role.MaxTargets == 0 {
		role.MaxTargets = defaultMaxTargets
	} else if !role.targetScoped() {
		// Left over from when the role was scoped to targets.
		role.MaxTargets = 0
	}
	if role.ephemeral() && role.KubernetesRoleType == "" {
		role.KubernetesRoleType = kindRole
	}
	// Accept any case for the kind, store it as Kubernetes spells it.
	for _, kind := range []string{kindRole, kindClusterRole} {
		if strings.EqualFold(role.KubernetesRoleType, kind) {
			role.KubernetesRoleType = kind
		}
	}
	if v, ok := d.GetOk("ttl"); ok {
		role.TTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("max_ttl"); ok {
		role.MaxTTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("audiences"); ok {
		role.Audiences = v.([]string)
	}
	if v, ok := d.GetOk("extra_labels"); ok {
		role.ExtraLabels = v.(map[string]string)
	}
	if v, ok := d.GetOk("extra_annotations"); ok {
		role.ExtraAnnotations = v.(map[string]string)
	}

	return role.validate()
}

func (b *backend) roleRead(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	role, err := getRole(ctx, req.Storage, name)
	if err != nil || role == nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"cluster":                   role.Cluster,
		"service_account_name":      role.ServiceAccountName,
		"service_account_namespace": role.ServiceAccountNamespace,
		"ttl":                       int64(role.TTL.Seconds()),
		"max_ttl":                   int64(role.MaxTTL.Seconds()),
		"audiences":                 nonNil(role.Audiences),
		"kubeconfig_namespace":      role.kubeconfigNamespace(role.ServiceAccountNamespace),
		"extra_labels":              nonNilMap(role.ExtraLabels),
		"extra_annotations":         nonNilMap(role.ExtraAnnotations),

		"kubernetes_role_name":                  role.KubernetesRoleName,
		"kubernetes_role_type":                  role.KubernetesRoleType,
		"generated_role_rules":                  role.GeneratedRoleRules,
		"allowed_kubernetes_namespaces":         nonNil(role.AllowedNamespaces),
		"allowed_kubernetes_namespace_selector": role.AllowedNamespaceSelector,
		"allow_cluster_role_binding":            role.AllowClusterRoleBinding,
		"name_template":                         role.NameTemplate,
		"target_profiles":                       nonNil(role.TargetProfiles),
		"target_rules":                          role.TargetRules,
		"max_targets":                           role.MaxTargets,
	}}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (b *backend) roleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	if err := req.Storage.Delete(ctx, roleStoragePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting role %q: %w", name, err)
	}
	b.roles.invalidate(name)
	return nil, nil
}

func (b *backend) roleList(ctx context.Context, req *logical.Request, _ *framework.FieldData, _ string) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, roleStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	return logical.ListResponse(names), nil
}
