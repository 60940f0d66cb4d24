package backend

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Target-scoped roles: credentials whose RBAC names exactly the pods of one
// scan. The role says which access a target gets (named profiles and the
// operator's rule templates over pods), the request names the pods (or a
// label selector), and the plugin resolves them before anything is
// created; the per-lease Role in each target namespace carries the
// templates with resourceNames set to that namespace's resolved pods.

const (
	// defaultMaxTargets and maxMaxTargets bound max_targets: each target is
	// one resourceName per rule, and one read (or list entry) per issue.
	defaultMaxTargets = 10
	maxMaxTargets     = 50

	profileExec  = "exec"
	profileDebug = "debug"
)

// targetProfiles are the named access a target gets: the scanners'
// documented least-privilege rules, without resourceNames.
var targetProfiles = map[string][]rbacv1.PolicyRule{
	// CINC Auditor / InSpec over `kubectl exec` (the k8s-container
	// transport): kubectl reads the pod, then opens pods/exec; logs for
	// diagnosis.
	profileExec: {
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
	},
	// The debug-container approach (distroless images): `kubectl debug
	// --target` adds an ephemeral container, waits for it by watching the
	// pod by name (list and watch with a metadata.name field selector,
	// which RBAC matches against resourceNames) and attaches to it.
	profileDebug: {
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers"}, Verbs: []string{"update", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/attach"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
	},
}

func profileNames() []string { return sortedKeys(targetProfiles) }

// podSubresource is what a target rule's resource may name after "pods/":
// one lowercase word, so no "*" or path tricks.
var podSubresource = regexp.MustCompile(`^[a-z]{1,63}$`)

// targetRuleTemplates are the rules every target gets, before the plugin
// fills in resourceNames: the profiles' in their order, then target_rules,
// duplicates dropped. The checks are those of generated_role_rules (the
// plugin's own rights, the permission bound counted with max_targets
// names), plus: pods and its subresources in the core group only, and no
// resourceNames (the plugin sets them).
func targetRuleTemplates(role *roleEntry) ([]rbacv1.PolicyRule, error) {
	var rules []rbacv1.PolicyRule
	seen := map[string]bool{}
	for _, p := range role.TargetProfiles {
		profile, ok := targetProfiles[p]
		if !ok {
			return nil, fmt.Errorf("target_profiles: unknown profile %q (known: %s)", clip(p), strings.Join(profileNames(), ", "))
		}
		if seen[p] {
			return nil, fmt.Errorf("target_profiles names %q twice", p)
		}
		seen[p] = true
		rules = append(rules, profile...)
	}
	if role.TargetRules != "" {
		own, err := parseTargetRules(role.TargetRules)
		if err != nil {
			return nil, err
		}
		rules = append(rules, own...)
	}
	if len(rules) == 0 {
		return nil, errors.New("set target_profiles or target_rules")
	}
	rules = compactRules(rules)
	for i, rule := range rules {
		if what := pluginOnlyRight(rule); what != "" {
			return nil, fmt.Errorf("target rule %d grants %s, a right the plugin holds for its own work", i, what)
		}
	}
	if n := rulePermissionCount(withNames(rules, max(role.MaxTargets, 1))); n > maxRulePermissions {
		return nil, fmt.Errorf("the target rules expand to more than %d permissions with max_targets=%d pod names (verbs x resources x names, summed over the rules); lower max_targets or use fewer verbs", maxRulePermissions, role.MaxTargets)
	}
	return rules, nil
}

// parseTargetRules reads target_rules: YAML or JSON as generated_role_rules,
// over pods and their subresources only.
func parseTargetRules(raw string) ([]rbacv1.PolicyRule, error) {
	if len(raw) > maxRulesBytes {
		return nil, fmt.Errorf("target_rules is %d bytes; at most %d are allowed", len(raw), maxRulesBytes)
	}
	rules, err := decodeRules(raw)
	if err != nil {
		return nil, fmt.Errorf("target_rules must be YAML or JSON: a list of rules or {rules: [...]}, each with verbs, apiGroups [\"\"] and resources over pods: %s", clip(err.Error()))
	}
	if len(rules) == 0 {
		return nil, errors.New("target_rules holds no rule")
	}
	for i, rule := range rules {
		switch {
		case len(rule.ResourceNames) > 0:
			return nil, fmt.Errorf("target_rules[%d] sets resourceNames; the plugin fills them in with the resolved pods", i)
		case len(rule.NonResourceURLs) > 0:
			return nil, fmt.Errorf("target_rules[%d] uses nonResourceURLs; target rules grant access to pods only", i)
		case len(rule.Verbs) == 0:
			return nil, fmt.Errorf("target_rules[%d] has no verbs", i)
		case slices.Contains(rule.Verbs, ""):
			return nil, fmt.Errorf("target_rules[%d] has an empty verb", i)
		case len(rule.APIGroups) != 1 || rule.APIGroups[0] != "":
			return nil, fmt.Errorf("target_rules[%d] must have apiGroups [\"\"] (pods are in the core group)", i)
		case len(rule.Resources) == 0:
			return nil, fmt.Errorf("target_rules[%d] names no resources", i)
		}
		for _, res := range rule.Resources {
			if res == "pods" {
				continue
			}
			sub, ok := strings.CutPrefix(res, "pods/")
			if !ok || !podSubresource.MatchString(sub) {
				return nil, fmt.Errorf("target_rules[%d] names resource %q; target rules grant access to pods and their subresources (pods/exec, pods/log, ...) only", i, clip(res))
			}
		}
	}
	return rules, nil
}

// compactRules drops rules equal to an earlier one.
func compactRules(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		if !slices.ContainsFunc(out, func(o rbacv1.PolicyRule) bool {
			return slices.Equal(o.Verbs, r.Verbs) && slices.Equal(o.APIGroups, r.APIGroups) && slices.Equal(o.Resources, r.Resources)
		}) {
			out = append(out, r)
		}
	}
	return out
}

// withNames copies rules with n placeholder resourceNames, for counting.
func withNames(rules []rbacv1.PolicyRule, n int) []rbacv1.PolicyRule {
	names := make([]string, n)
	out := make([]rbacv1.PolicyRule, len(rules))
	for i, r := range rules {
		out[i] = *r.DeepCopy()
		out[i].ResourceNames = names
	}
	return out
}

// targetRulesFor are the rules of the per-lease Role in one namespace:
// every template with resourceNames set to that namespace's pods.
func targetRulesFor(templates []rbacv1.PolicyRule, pods []string) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(templates))
	for i, r := range templates {
		out[i] = *r.DeepCopy()
		out[i].ResourceNames = slices.Clone(pods)
	}
	return out
}

// validateTargetRole checks the fields of a target-scoped role; the rest
// (namespaces, name template) is validateRoleMode's.
func validateTargetRole(r *roleEntry) error {
	if r.KubernetesRoleType != kindRole {
		return fmt.Errorf("target_profiles and target_rules need kubernetes_role_type=Role: the per-lease Role in each target namespace names the pods (got %q)", clip(r.KubernetesRoleType))
	}
	if r.MaxTargets < 1 || r.MaxTargets > maxMaxTargets {
		return fmt.Errorf("max_targets must be between 1 and %d (got %d)", maxMaxTargets, r.MaxTargets)
	}
	_, err := targetRuleTemplates(r)
	return err
}

// podTarget is one resolved target: a pod that existed at issue.
type podTarget struct {
	Namespace  string
	Name       string
	Containers []string
}

func (p podTarget) String() string { return p.Namespace + "/" + p.Name }

// targetsAsked tells whether the request names targets.
func targetsAsked(d *framework.FieldData) (targets, selector bool) {
	_, targets = d.GetOk("targets")
	_, selector = d.GetOk("target_selector")
	return targets, selector
}

// parseTargetParams checks the target parameters against the role without
// the API server; errors are the caller's to fix.
func parseTargetParams(roleName string, role *roleEntry, d *framework.FieldData) error {
	targets, selector := targetsAsked(d)
	if role.mode() != modeTargets {
		if targets || selector {
			return fmt.Errorf("role %q is not scoped to targets (target_profiles, target_rules): targets and target_selector do not apply", roleName)
		}
		return nil
	}
	_, nssAsked := d.GetOk("kubernetes_namespaces")
	switch {
	case targets && selector:
		return errors.New("give targets or target_selector, not both")
	case !targets && !selector:
		return fmt.Errorf("role %q is scoped to targets: name the pods to scan with targets (pod names, or namespace/pod) or target_selector (a label selector)", roleName)
	case targets && nssAsked:
		return errors.New("kubernetes_namespaces applies to target_selector only; with targets, name pods of other namespaces as namespace/pod")
	}
	return nil
}

// targetRequest is a parsed target request: the pods named, or a selector
// and the namespaces it applies in.
type targetRequest struct {
	named      []podTarget // without containers yet
	selector   labels.Selector
	namespaces []string
	// bySelector are namespaces only the role's selector can allow.
	bySelector []string
}

// parseTargets reads targets or target_selector, checked offline:
// well-formed names, no duplicates, at most max_targets names, every
// namespace allowed by the role's list (or left to its selector). Nothing
// about a pod outside an allowed namespace is ever read.
func parseTargets(roleName string, role *roleEntry, d *framework.FieldData) (*targetRequest, error) {
	if err := parseTargetParams(roleName, role, d); err != nil {
		return nil, userError{err}
	}
	// A role stored before today's checks is refused before any pod is
	// read.
	if _, err := targetRuleTemplates(role); err != nil {
		return nil, userError{fmt.Errorf("role %q can no longer be issued; write it again: %w", roleName, err)}
	}
	tr := &targetRequest{}
	if raw, ok := d.GetOk("target_selector"); ok {
		sel, err := parseTargetSelector(raw.(string))
		if err != nil {
			return nil, userError{err}
		}
		tr.selector = sel
		namespaces, bySelector, _, err := requestedNamespaces(roleName, role, d)
		if err != nil {
			return nil, err
		}
		tr.namespaces, tr.bySelector = namespaces, bySelector
		return tr, nil
	}

	names := d.Get("targets").([]string)
	switch {
	case len(names) == 0:
		return nil, userError{errors.New("targets names no pod; give one or more, comma-separated")}
	case len(names) > role.MaxTargets:
		return nil, userError{fmt.Errorf("targets names %d pods; role %q allows at most %d (max_targets)", len(names), roleName, role.MaxTargets)}
	}
	defaultNS := ""
	seen := map[string]bool{}
	for i, entry := range names {
		ns, name, qualified := strings.Cut(entry, "/")
		if !qualified {
			ns, name = "", entry
		}
		if name == "" || strings.Contains(name, "/") {
			return nil, userError{fmt.Errorf("targets entry %d is not a pod name or namespace/pod: %q", i+1, clip(entry))}
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return nil, userError{fmt.Errorf("targets entry %d: %q is not a valid pod name: %s", i+1, clip(name), strings.Join(errs, "; "))}
		}
		if !qualified {
			if defaultNS == "" {
				chosen, err := chooseNamespace(roleName, role, d.Get("kubernetes_namespace").(string))
				if err != nil {
					return nil, err
				}
				defaultNS = chosen
			}
			ns = defaultNS
		} else if err := validateNamespaceName("targets entry namespace", ns); err != nil {
			return nil, userError{err}
		}
		t := podTarget{Namespace: ns, Name: name}
		if seen[t.String()] {
			return nil, userError{fmt.Errorf("targets names %s more than once", t)}
		}
		seen[t.String()] = true
		tr.named = append(tr.named, t)
		if !slices.Contains(tr.namespaces, ns) {
			tr.namespaces = append(tr.namespaces, ns)
		}
	}
	if _, nsAsked := d.GetOk("kubernetes_namespace"); nsAsked && defaultNS == "" {
		// Silently ignoring it could let a caller believe the credential
		// lives there.
		return nil, userError{errors.New("kubernetes_namespace applies to bare pod names in targets; every target names its namespace, drop kubernetes_namespace")}
	}
	if len(tr.namespaces) > maxRequestNamespaces {
		return nil, userError{fmt.Errorf("targets span %d namespaces; at most %d are allowed", len(tr.namespaces), maxRequestNamespaces)}
	}
	for _, ns := range tr.namespaces {
		listed, err := listAllows(roleName, role, ns)
		if err != nil {
			return nil, err
		}
		if !listed {
			tr.bySelector = append(tr.bySelector, ns)
		}
	}
	return tr, nil
}

// parseTargetSelector accepts the kubectl string form of a label selector
// ("app=web,tier in (a,b)"); one that selects every pod is refused.
func parseTargetSelector(raw string) (labels.Selector, error) {
	if len(raw) > maxSelectorBytes {
		return nil, fmt.Errorf("target_selector is %d bytes; at most %d are allowed", len(raw), maxSelectorBytes)
	}
	sel, err := labels.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("target_selector is not a label selector (app=web,tier in (a,b)): %s", clip(err.Error()))
	}
	if sel.Empty() {
		return nil, errors.New("target_selector selects every pod; name a label")
	}
	return sel, nil
}

// resolve checks the namespaces only the role's selector allows, then reads
// the pods: each named pod must exist; a selector must match between one
// and max_targets pods over its namespaces, listed with a limit one above
// what is left so a larger match is seen without reading it all.
func (tr *targetRequest) resolve(ctx context.Context, api kubeAPI, roleName string, role *roleEntry) ([]podTarget, error) {
	for _, ns := range tr.bySelector {
		if err := matchSelector(ctx, api, roleName, role, ns); err != nil {
			return nil, err
		}
	}
	if tr.selector == nil {
		out := make([]podTarget, 0, len(tr.named))
		for _, t := range tr.named {
			pod, err := api.GetPod(ctx, t.Namespace, t.Name)
			if apierrors.IsNotFound(err) {
				return nil, userError{fmt.Errorf("target pod %s does not exist", t)}
			}
			if err != nil {
				return nil, fmt.Errorf("reading target pod %s: %w", t, err)
			}
			out = append(out, pod)
		}
		return out, nil
	}
	var out []podTarget
	for _, ns := range tr.namespaces {
		left := role.MaxTargets - len(out)
		pods, err := api.ListPods(ctx, ns, tr.selector.String(), int64(left+1))
		if err != nil {
			return nil, fmt.Errorf("listing the pods matching target_selector in namespace %q: %w", ns, err)
		}
		if len(pods) > left {
			return nil, userError{fmt.Errorf("target_selector %s matches more than %d pods (max_targets of role %q); narrow it", tr.selector, role.MaxTargets, roleName)}
		}
		out = append(out, pods...)
	}
	if len(out) == 0 {
		return nil, userError{fmt.Errorf("target_selector %s matches no pod in namespace(s) %s", tr.selector, strings.Join(tr.namespaces, ", "))}
	}
	return out, nil
}

// targetNamespaces are the distinct namespaces of targets, in order.
func targetNamespaces(targets []podTarget) []string {
	var out []string
	for _, t := range targets {
		if !slices.Contains(out, t.Namespace) {
			out = append(out, t.Namespace)
		}
	}
	return out
}

// podsIn are the names of the targets in ns, sorted.
func podsIn(targets []podTarget, ns string) []string {
	var out []string
	for _, t := range targets {
		if t.Namespace == ns {
			out = append(out, t.Name)
		}
	}
	slices.Sort(out)
	return out
}

// targetsData is the response's targets field: what the scanner should
// scan.
func targetsData(targets []podTarget) []map[string]interface{} {
	out := make([]map[string]interface{}, len(targets))
	for i, t := range targets {
		out[i] = map[string]interface{}{"namespace": t.Namespace, "pod": t.Name, "containers": slices.Clone(t.Containers)}
	}
	return out
}

// targetsNotCoveredWarning goes with every target-scoped credential. RBAC
// matches names: a pod deleted and created again under a listed name (a
// StatefulSet's) is covered, any other new pod is not.
const targetsNotCoveredWarning = "this credential covers only the pods named in targets: a pod created after issue is not covered, even if it matches target_selector (a pod re-created under a listed name is, since RBAC matches names); read a new credential to scan it"
