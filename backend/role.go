package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	rbacv1 "k8s.io/api/rbac/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// The role as stored: its fields, modes, storage and validation.

const (
	roleStoragePrefix = "roles/"

	defaultRoleTTL    = 15 * time.Minute
	defaultRoleMaxTTL = time.Hour
	// maxTokenLifetime is TokenRequest's own upper bound (2^32 seconds);
	// anything longer is a typo, not a policy.
	maxTokenLifetime = (1 << 32) * time.Second
	// maxRoleMaxTTL leaves room for the tokenExpirySkew the plugin adds to
	// every TokenRequest; a longer max_ttl would be refused at issue time.
	maxRoleMaxTTL = maxTokenLifetime - tokenExpirySkew
)

const (
	// maxExtraEntries caps extra_labels and extra_annotations each; objects
	// with more are a mistake, and each entry costs every issue.
	maxExtraEntries = 64
	// maxExtraAnnotationsBytes caps the extra annotations' keys and values
	// together, far below Kubernetes' 256 KiB, so the plugin's own
	// annotations (role and cluster names of at most 128 bytes, an RFC 3339
	// time, a 32-character id) always fit: an issue never fails on size.
	maxExtraAnnotationsBytes = 64 << 10
)

// reservedKey says why a label or annotation key may not be set by a role,
// or "" if it may. Kubernetes owns the kubernetes.io and k8s.io prefixes and
// their subdomains (rbac.authorization.k8s.io/aggregate-to-admin, say, would
// grant through aggregation); the plugin owns its own keys, which tidy and
// revoke rely on. Compared case-insensitively: annotation keys are
// validated that way.
func reservedKey(key string) string {
	lower := strings.ToLower(key)
	prefix, _, hasPrefix := strings.Cut(lower, "/")
	switch {
	case lower == managedByLabel, hasPrefix && prefix+"/" == annotationPrefix:
		return "reserved for the plugin"
	case !hasPrefix:
		return ""
	case prefix == "kubernetes.io", prefix == "k8s.io", strings.HasSuffix(prefix, ".kubernetes.io"), strings.HasSuffix(prefix, ".k8s.io"):
		return "reserved for Kubernetes (kubernetes.io, k8s.io and their subdomains)"
	}
	return ""
}

// validateExtraLabels applies Kubernetes' own label rules at write time, so
// a role never fails at issue time on what it stores.
func validateExtraLabels(labels map[string]string) error {
	const fieldName = "extra_labels"
	if len(labels) > maxExtraEntries {
		return fmt.Errorf("%s has %d entries; at most %d are allowed", fieldName, len(labels), maxExtraEntries)
	}
	path := field.NewPath(fieldName)
	for _, k := range sortedKeys(labels) {
		if errs := metavalidation.ValidateLabelName(k, path); len(errs) > 0 {
			return fmt.Errorf("%s key %q is invalid: %s", fieldName, clip(k), details(errs))
		}
		if why := reservedKey(k); why != "" {
			return fmt.Errorf("%s key %q is %s", fieldName, clip(k), why)
		}
		// The key passed: what remains is about the value.
		if errs := metavalidation.ValidateLabels(map[string]string{k: labels[k]}, path); len(errs) > 0 {
			return fmt.Errorf("%s value for %q is invalid: %s", fieldName, clip(k), details(errs))
		}
	}
	return nil
}

func validateExtraAnnotations(annotations map[string]string) error {
	const fieldName = "extra_annotations"
	if len(annotations) > maxExtraEntries {
		return fmt.Errorf("%s has %d entries; at most %d are allowed", fieldName, len(annotations), maxExtraEntries)
	}
	total := 0
	for k, v := range annotations {
		total += len(k) + len(v)
	}
	if total > maxExtraAnnotationsBytes {
		return fmt.Errorf("%s hold %d bytes of keys and values; at most %d are allowed", fieldName, total, maxExtraAnnotationsBytes)
	}
	path := field.NewPath(fieldName)
	for _, k := range sortedKeys(annotations) {
		if errs := apivalidation.ValidateAnnotations(map[string]string{k: annotations[k]}, path); len(errs) > 0 {
			return fmt.Errorf("%s key %q is invalid: %s", fieldName, clip(k), details(errs))
		}
		if why := reservedKey(k); why != "" {
			return fmt.Errorf("%s key %q is %s", fieldName, clip(k), why)
		}
	}
	return nil
}

// details joins apimachinery's explanations without the rejected values,
// which its Error() would quote in full.
func details(errs field.ErrorList) string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		if e.Detail != "" {
			out = append(out, e.Detail)
		} else {
			out = append(out, e.Type.String())
		}
	}
	return strings.Join(out, "; ")
}

type roleEntry struct {
	Cluster                 string            `json:"cluster"`
	ServiceAccountName      string            `json:"service_account_name"`
	ServiceAccountNamespace string            `json:"service_account_namespace"`
	TTL                     time.Duration     `json:"ttl"`
	MaxTTL                  time.Duration     `json:"max_ttl"`
	Audiences               []string          `json:"audiences,omitempty"`
	KubeconfigNamespace     string            `json:"kubeconfig_namespace,omitempty"`
	ExtraLabels             map[string]string `json:"extra_labels,omitempty"`
	ExtraAnnotations        map[string]string `json:"extra_annotations,omitempty"`

	// Ephemeral modes: a ServiceAccount (and binding) per lease.
	KubernetesRoleName       string   `json:"kubernetes_role_name,omitempty"`
	KubernetesRoleType       string   `json:"kubernetes_role_type,omitempty"`
	GeneratedRoleRules       string   `json:"generated_role_rules,omitempty"`
	AllowedNamespaces        []string `json:"allowed_kubernetes_namespaces,omitempty"`
	AllowedNamespaceSelector string   `json:"allowed_kubernetes_namespace_selector,omitempty"`
	AllowClusterRoleBinding  bool     `json:"allow_cluster_role_binding,omitempty"`
	NameTemplate             string   `json:"name_template,omitempty"`

	// Target-scoped: per lease a Role per target namespace naming exactly
	// the pods the request resolved to.
	TargetProfiles []string `json:"target_profiles,omitempty"`
	TargetRules    string   `json:"target_rules,omitempty"`
	MaxTargets     int      `json:"max_targets,omitempty"`
}

// kubeconfigNamespace is the kubeconfig context's namespace for a lease in
// namespace ns.
func (r *roleEntry) kubeconfigNamespace(ns string) string {
	if r.KubeconfigNamespace != "" {
		return r.KubeconfigNamespace
	}
	return ns
}

func getRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	entry, err := s.Get(ctx, roleStoragePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading role %q: %w", name, err)
	}
	if entry == nil {
		return nil, nil
	}
	var role roleEntry
	if err := entry.DecodeJSON(&role); err != nil {
		return nil, fmt.Errorf("decoding role %q: %w", name, err)
	}
	return &role, nil
}

// rolesUsingCluster returns the roles that point at cluster, by name.
func rolesUsingCluster(ctx context.Context, s logical.Storage, cluster string) (map[string]*roleEntry, error) {
	names, err := s.List(ctx, roleStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	users := map[string]*roleEntry{}
	for _, name := range names {
		role, err := getRole(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if role != nil && role.Cluster == cluster {
			users[name] = role
		}
	}
	return users, nil
}

func validateRoleTTLs(ttl, maxTTL time.Duration) error {
	switch {
	case ttl <= 0:
		return errors.New("ttl must be positive")
	case maxTTL <= 0:
		return errors.New("max_ttl must be positive")
	case maxTTL > maxRoleMaxTTL:
		return fmt.Errorf("max_ttl %s is longer than a Kubernetes token can live (%d s, less the plugin's %s margin: at most %d s)", maxTTL, int64(maxTokenLifetime.Seconds()), tokenExpirySkew, int64(maxRoleMaxTTL.Seconds()))
	case ttl > maxTTL:
		return fmt.Errorf("ttl %s is greater than max_ttl %s", ttl, maxTTL)
	}
	return nil
}

const (
	// Audiences are URLs or short names; these bounds leave room for any
	// real one and keep every TokenRequest and JWT small.
	maxAudiences     = 16
	maxAudienceBytes = 256
)

func validateAudiences(audiences []string) error {
	if len(audiences) > maxAudiences {
		return fmt.Errorf("audiences has %d entries; at most %d are allowed", len(audiences), maxAudiences)
	}
	seen := map[string]bool{}
	for _, a := range audiences {
		switch {
		case a == "":
			return errors.New("audiences must not contain an empty value")
		case len(a) > maxAudienceBytes:
			return fmt.Errorf("audience %q is %d bytes long; at most %d are allowed", clip(a), len(a), maxAudienceBytes)
		case seen[a]:
			return fmt.Errorf("audience %q is listed twice", clip(a))
		}
		seen[a] = true
	}
	return nil
}

// roleMode is how a role gets the identity its tokens carry.
type roleMode string

const (
	// modeServiceAccount: an existing service account; the token is bound to
	// a per-lease Secret.
	modeServiceAccount roleMode = "service_account_name"
	// modeExistingRole: per lease a ServiceAccount bound to an existing Role
	// or ClusterRole.
	modeExistingRole roleMode = "kubernetes_role_name"
	// modeGeneratedRole: per lease a Role (or ClusterRole) from the role's
	// rules, a ServiceAccount and a binding.
	modeGeneratedRole roleMode = "generated_role_rules"
	// modeTargets: per lease a ServiceAccount and, in each namespace of the
	// request's resolved target pods, a Role whose rules name exactly those
	// pods, and its binding.
	modeTargets roleMode = "target_profiles/target_rules"

	anyNamespace = "*"

	maxRulesBytes    = 64 << 10
	maxSelectorBytes = 4 << 10
	// maxAllowedNamespaces bounds allowed_kubernetes_namespaces: tidy lists
	// and check reviews each namespace. Use a selector or "*" for more.
	maxAllowedNamespaces = 128
	// maxRulePermissions bounds what generated_role_rules expand to (verbs
	// x apiGroups x resources x resourceNames, summed over the rules): check
	// asks the API server about each, so the rules' size, not only their
	// bytes, must be bounded when they are stored.
	maxRulePermissions = 1024

	defaultNameTemplate = `vault-{{ dns 20 .RoleName }}-{{ random 10 }}`
)

func (r *roleEntry) mode() roleMode {
	switch {
	case r.KubernetesRoleName != "":
		return modeExistingRole
	case r.GeneratedRoleRules != "":
		return modeGeneratedRole
	case r.targetScoped():
		return modeTargets
	}
	return modeServiceAccount
}

func (r *roleEntry) ephemeral() bool { return r.mode() != modeServiceAccount }

// targetScoped reports whether the role sets any target field.
func (r *roleEntry) targetScoped() bool { return len(r.TargetProfiles) > 0 || r.TargetRules != "" }

// generatesRole reports whether a lease creates a Role from rules (the
// role's own, or its target templates).
func (r *roleEntry) generatesRole() bool {
	m := r.mode()
	return (m == modeGeneratedRole && r.KubernetesRoleType == kindRole) || m == modeTargets
}

// validateRoleMode checks that exactly one mode is set and that the fields
// of the other modes are not.
func validateRoleMode(r *roleEntry) error {
	set := []string{}
	if r.ServiceAccountName != "" {
		set = append(set, string(modeServiceAccount))
	}
	if r.KubernetesRoleName != "" {
		set = append(set, string(modeExistingRole))
	}
	if r.GeneratedRoleRules != "" {
		set = append(set, string(modeGeneratedRole))
	}
	if r.targetScoped() {
		set = append(set, string(modeTargets))
	}
	if len(set) != 1 {
		return fmt.Errorf("set exactly one of service_account_name, kubernetes_role_name, generated_role_rules and target_profiles/target_rules (got %d: %s)", len(set), strings.Join(set, ", "))
	}
	if r.MaxTargets != 0 && r.mode() != modeTargets {
		return errors.New("max_targets applies only with target_profiles or target_rules")
	}
	if !r.ephemeral() {
		if r.ServiceAccountNamespace == "" {
			return errors.New("service_account_namespace is required with service_account_name")
		}
		if len(r.AllowedNamespaces) > 0 || r.AllowedNamespaceSelector != "" || r.AllowClusterRoleBinding || r.NameTemplate != "" {
			return errors.New("allowed_kubernetes_namespaces, allowed_kubernetes_namespace_selector, allow_cluster_role_binding and name_template apply only with the ephemeral modes (kubernetes_role_name, generated_role_rules, target_profiles/target_rules)")
		}
		if r.KubernetesRoleType != "" {
			return errors.New("kubernetes_role_type applies only with kubernetes_role_name, generated_role_rules or target_profiles/target_rules")
		}
		return nil
	}

	// Both are parsed again on every issue: keep that work small.
	if len(r.GeneratedRoleRules) > maxRulesBytes {
		return fmt.Errorf("generated_role_rules is %d bytes; at most %d are allowed", len(r.GeneratedRoleRules), maxRulesBytes)
	}
	if len(r.AllowedNamespaceSelector) > maxSelectorBytes {
		return fmt.Errorf("allowed_kubernetes_namespace_selector is %d bytes; at most %d are allowed", len(r.AllowedNamespaceSelector), maxSelectorBytes)
	}
	if r.ServiceAccountNamespace != "" {
		return errors.New("service_account_namespace applies only with service_account_name; ephemeral roles take the namespace from the request (allowed_kubernetes_namespaces)")
	}
	switch r.KubernetesRoleType {
	case kindRole, kindClusterRole:
	default:
		return fmt.Errorf("kubernetes_role_type must be Role or ClusterRole (got %q)", clip(r.KubernetesRoleType))
	}
	if r.AllowClusterRoleBinding && r.KubernetesRoleType != kindClusterRole {
		return errors.New("allow_cluster_role_binding needs kubernetes_role_type=ClusterRole")
	}
	if len(r.AllowedNamespaces) == 0 && r.AllowedNamespaceSelector == "" {
		return errors.New("set allowed_kubernetes_namespaces (a list, or \"*\" for any) or allowed_kubernetes_namespace_selector")
	}
	if len(r.AllowedNamespaces) > maxAllowedNamespaces {
		return fmt.Errorf("allowed_kubernetes_namespaces has %d entries; at most %d are allowed (use allowed_kubernetes_namespace_selector or \"*\" for more)", len(r.AllowedNamespaces), maxAllowedNamespaces)
	}
	for _, ns := range r.AllowedNamespaces {
		if ns == anyNamespace {
			continue
		}
		if err := validateNamespaceName("allowed_kubernetes_namespaces", ns); err != nil {
			return err
		}
	}
	if r.AllowedNamespaceSelector != "" {
		if _, err := parseNamespaceSelector(r.AllowedNamespaceSelector); err != nil {
			return err
		}
	}
	if r.KubernetesRoleName != "" {
		if errs := validation.IsDNS1123Subdomain(r.KubernetesRoleName); len(errs) > 0 {
			// RBAC names are path segments; this is stricter but clear.
			return fmt.Errorf("kubernetes_role_name %q is not a valid name: %s", clip(r.KubernetesRoleName), strings.Join(errs, "; "))
		}
	}
	if r.GeneratedRoleRules != "" {
		if _, err := parseRules(r.GeneratedRoleRules, r.KubernetesRoleType); err != nil {
			return err
		}
	}
	if r.mode() == modeTargets {
		if err := validateTargetRole(r); err != nil {
			return err
		}
	}
	return validateNameTemplate(r.nameTemplate())
}

// parseRules reads generated_role_rules: YAML or JSON, either a list of
// PolicyRules or an object with a "rules" list. Unknown keys are refused so
// a typo (say "resource") does not silently grant less or more.
func parseRules(raw, roleType string) ([]rbacv1.PolicyRule, error) {
	rules, err := decodeRules(raw)
	if err != nil {
		return nil, fmt.Errorf("generated_role_rules must be YAML or JSON: a list of rules or {rules: [...]}, each with verbs, apiGroups and resources: %s", clip(err.Error()))
	}
	if len(rules) == 0 {
		return nil, errors.New("generated_role_rules holds no rule")
	}
	for i, rule := range rules {
		if what := pluginOnlyRight(rule); what != "" {
			return nil, fmt.Errorf("generated_role_rules[%d] grants %s, a right the plugin holds for its own work: a lease could mint other identities or end other leases with it", i, what)
		}
	}
	if n := rulePermissionCount(rules); n > maxRulePermissions {
		return nil, fmt.Errorf("generated_role_rules expand to more than %d permissions (verbs x apiGroups x resources x resourceNames, summed over the rules); split the role or use wildcards", maxRulePermissions)
	}
	for i, rule := range rules {
		switch {
		case len(rule.Verbs) == 0:
			return nil, fmt.Errorf("generated_role_rules[%d] has no verbs", i)
		case len(rule.Resources) == 0 && len(rule.NonResourceURLs) == 0:
			return nil, fmt.Errorf("generated_role_rules[%d] names neither resources nor nonResourceURLs", i)
		case len(rule.Resources) > 0 && len(rule.NonResourceURLs) > 0:
			return nil, fmt.Errorf("generated_role_rules[%d] mixes resources and nonResourceURLs", i)
		case len(rule.NonResourceURLs) > 0 && roleType != kindClusterRole:
			return nil, fmt.Errorf("generated_role_rules[%d] uses nonResourceURLs, which only a ClusterRole can grant", i)
		case len(rule.Resources) > 0 && rule.APIGroups == nil:
			return nil, fmt.Errorf("generated_role_rules[%d] needs apiGroups ([\"\"] for the core group)", i)
		}
	}
	return rules, nil
}

func (r *roleEntry) nameTemplate() string {
	if r.NameTemplate != "" {
		return r.NameTemplate
	}
	return defaultNameTemplate
}

// rulePermissionCount is how many single permissions rules expand to,
// saturating just above maxRulePermissions so no product can overflow.
func rulePermissionCount(rules []rbacv1.PolicyRule) int {
	total := 0
	for _, rule := range rules {
		n := 1
		for _, size := range []int{len(rule.Verbs), max(len(rule.APIGroups), 1), max(len(rule.Resources), len(rule.NonResourceURLs), 1), max(len(rule.ResourceNames), 1)} {
			n = min(n*size, maxRulePermissions+1)
		}
		total = min(total+n, maxRulePermissions+1)
	}
	return total
}

// pluginOnlyRight names the first right in rule that the plugin holds to do
// its own work and must never pass to a lease: minting tokens, reading or
// deleting Secrets (legacy token Secrets, other leases' bound Secrets),
// writing ServiceAccounts or RBAC, client certificates, and the verbs that
// step around RBAC's escalation checks. The plugin can only generate rules
// it holds itself, so without this a roles/ writer could hand out exactly
// these. "" when rule grants none of them.
func pluginOnlyRight(rule rbacv1.PolicyRule) string {
	for _, verb := range rule.Verbs {
		switch verb {
		case "impersonate", "bind", "escalate":
			return fmt.Sprintf("the %q verb", verb)
		}
	}
	writes := slices.ContainsFunc(rule.Verbs, func(v string) bool {
		switch v {
		case "create", "update", "patch", "delete", "deletecollection", rbacv1.VerbAll:
			return true
		}
		return false
	})
	type right struct {
		group, resource string
		anyVerb         bool
	}
	of := func(kind, subresource string, anyVerb bool) right {
		k := objectKinds[kind]
		if subresource != "" {
			return right{k.group, k.resource + "/" + subresource, anyVerb}
		}
		return right{k.group, k.resource, anyVerb}
	}
	sensitive := []right{
		of(kindServiceAccount, "token", true),
		of(kindSecret, "", true),
		of(kindServiceAccount, "", false),
		of(kindRole, "", false),
		of(kindRoleBinding, "", false),
		of(kindClusterRole, "", false),
		of(kindClusterRoleBinding, "", false),
		// Not a kind the plugin creates: a client certificate is an identity.
		{"certificates.k8s.io", "certificatesigningrequests", false},
	}
	for _, s := range sensitive {
		if !s.anyVerb && !writes {
			continue
		}
		if !slices.ContainsFunc(rule.APIGroups, func(g string) bool { return g == s.group || g == rbacv1.APIGroupAll }) {
			continue
		}
		if slices.ContainsFunc(rule.Resources, func(r string) bool { return resourceCovers(r, s.resource) }) {
			return fmt.Sprintf("%s on %s", strings.Join(rule.Verbs, ","), s.resource)
		}
	}
	return ""
}

// resourceCovers reports whether an RBAC rule's resource matches target
// (resource or resource/subresource), with RBAC's wildcards: "*" and
// "*/<subresource>".
func resourceCovers(rule, target string) bool {
	if rule == rbacv1.ResourceAll || rule == target {
		return true
	}
	_, sub, hasSub := strings.Cut(target, "/")
	return hasSub && rule == "*/"+sub
}

// namespaces are the namespaces the role's leases create objects in,
// sorted: the service account's, or for ephemeral roles those listed and
// those its selector matches (selected; nil when unknown). [""] stands for
// every namespace: "*", or a selector whose matches are unknown.
func (r *roleEntry) namespaces(selected []string) []string {
	if !r.ephemeral() {
		return []string{r.ServiceAccountNamespace}
	}
	if slices.Contains(r.AllowedNamespaces, anyNamespace) || (r.AllowedNamespaceSelector != "" && selected == nil) {
		return []string{""}
	}
	namespaces := slices.Concat(r.AllowedNamespaces, selected)
	slices.Sort(namespaces)
	return slices.Compact(namespaces)
}

// validate checks a role as it will be stored, so that it never fails at
// issue time on what it holds.
func (role *roleEntry) validate() error {
	if role.Cluster == "" {
		return errors.New("cluster is required")
	}
	if err := validateVaultName("cluster", role.Cluster); err != nil {
		return err
	}
	if err := validateRoleMode(role); err != nil {
		return err
	}
	if role.ServiceAccountName != "" {
		if err := validateServiceAccountName("service_account_name", role.ServiceAccountName); err != nil {
			return err
		}
		if err := validateNamespaceName("service_account_namespace", role.ServiceAccountNamespace); err != nil {
			return err
		}
	}
	if role.KubeconfigNamespace != "" {
		if err := validateNamespaceName("kubeconfig_namespace", role.KubeconfigNamespace); err != nil {
			return err
		}
	}
	if err := validateRoleTTLs(role.TTL, role.MaxTTL); err != nil {
		return err
	}
	if err := validateAudiences(role.Audiences); err != nil {
		return err
	}
	if err := validateExtraLabels(role.ExtraLabels); err != nil {
		return err
	}
	return validateExtraAnnotations(role.ExtraAnnotations)
}

// roleCache keeps decoded roles in memory for creds/, the hot path, which
// otherwise reads and decodes its role from Vault's storage (a gRPC round
// trip into Vault) on every request. Role writes and deletes on this node
// and Invalidate (writes replicated from another node) drop entries.
//
// The generation counter stops a read that raced with an invalidation from
// caching what it read before the write.
type roleCache struct {
	mu         sync.RWMutex
	roles      map[string]*roleEntry
	generation uint64
}

func newRoleCache() *roleCache {
	return &roleCache{roles: map[string]*roleEntry{}}
}

// get returns the role from memory, or reads it from storage and keeps it.
// A missing role is not cached: creating it must take effect at once. The
// returned role is shared and must not be changed.
func (c *roleCache) get(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	c.mu.RLock()
	role, ok := c.roles[name]
	generation := c.generation
	c.mu.RUnlock()
	if ok {
		return role, nil
	}
	role, err := getRole(ctx, s, name)
	if err != nil || role == nil {
		return role, err
	}
	c.mu.Lock()
	if c.generation == generation {
		c.roles[name] = role
	}
	c.mu.Unlock()
	return role, nil
}

// invalidate drops one role.
func (c *roleCache) invalidate(name string) {
	c.mu.Lock()
	delete(c.roles, name)
	c.generation++
	c.mu.Unlock()
}

// reset drops every role.
func (c *roleCache) reset() {
	c.mu.Lock()
	c.roles = map[string]*roleEntry{}
	c.generation++
	c.mu.Unlock()
}

// decodeRules reads RBAC rules as YAML or JSON: a list of PolicyRules or an
// object with a "rules" list, refusing unknown keys.
func decodeRules(raw string) ([]rbacv1.PolicyRule, error) {
	var wrapped struct {
		Rules []rbacv1.PolicyRule `json:"rules"`
	}
	if err := yaml.UnmarshalStrict([]byte(raw), &wrapped); err == nil && wrapped.Rules != nil {
		return wrapped.Rules, nil
	}
	var rules []rbacv1.PolicyRule
	if err := yaml.UnmarshalStrict([]byte(raw), &rules); err != nil {
		return nil, err
	}
	return rules, nil
}
