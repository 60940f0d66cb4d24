package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/vault/sdk/framework"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// Which namespaces a request of an ephemeral role may use, checked against
// the role's list, "*" and selector.

// maxRequestNamespaces bounds kubernetes_namespaces: each namespace costs
// a binding (and a Role) to create, check and revoke.
const maxRequestNamespaces = 32

// parseScopeParams is the one place that decides, for every mode, what
// kubernetes_namespace, kubernetes_namespaces and cluster_role_binding may
// say, and returns whether a cluster-wide binding was asked for. A role of
// an existing service account issues for that account only: it accepts
// the values that restate it (its own namespace, cluster_role_binding=false:
// what Terraform's vault_kubernetes_service_account_token always sends) and
// refuses any other, so no request field changes what it issues.
func parseScopeParams(roleName string, role *roleEntry, d *framework.FieldData) (clusterRoleBinding bool, err error) {
	ns := d.Get("kubernetes_namespace").(string)
	_, listAsked := d.GetOk("kubernetes_namespaces")
	// kubeconfig/ has no cluster_role_binding: GetOk is false there.
	v, _ := d.GetOk("cluster_role_binding")
	crb, _ := v.(bool)
	if !role.ephemeral() {
		account := role.ServiceAccountNamespace + "/" + role.ServiceAccountName
		switch {
		case listAsked:
			return false, fmt.Errorf("role %q issues tokens of the existing service account %s: kubernetes_namespaces does not apply", roleName, account)
		case ns != "" && ns != role.ServiceAccountNamespace:
			return false, fmt.Errorf("role %q issues tokens of the existing service account %s: kubernetes_namespace may only restate %q (or be left out), not %q", roleName, account, role.ServiceAccountNamespace, clip(ns))
		case crb:
			return false, fmt.Errorf("role %q issues tokens of the existing service account %s, whose own RBAC applies: cluster_role_binding=true does not apply (false, or left out, is accepted)", roleName, account)
		}
		return false, nil
	}
	switch {
	case ns != "" && listAsked:
		return false, errors.New("give kubernetes_namespace or kubernetes_namespaces, not both")
	case crb && !role.AllowClusterRoleBinding:
		return false, errors.New("cluster_role_binding is not allowed by this role (allow_cluster_role_binding)")
	case crb && listAsked:
		return false, errors.New("cluster_role_binding=true binds cluster-wide, so it already spans every namespace: drop kubernetes_namespaces, or drop cluster_role_binding to bind in each listed namespace")
	}
	return crb, nil
}

// requestedNamespaces is what an ephemeral request asks for, checked
// without the API server: kubernetes_namespaces (every entry well formed
// and distinct, at most maxRequestNamespaces) or kubernetes_namespace (or
// the role's only allowed one), each allowed by the role's list or "*";
// bySelector are those only the role's selector can allow, which creds/
// checks with the API server (matchSelector) and kubeconfig/ leaves to
// creds/. list tells whether kubernetes_namespaces was used.
func requestedNamespaces(roleName string, role *roleEntry, d *framework.FieldData) (namespaces, bySelector []string, list bool, err error) {
	if requested, ok := d.GetOk("kubernetes_namespaces"); ok {
		namespaces, list = slices.Clone(requested.([]string)), true
		if err := validateNamespaceList(namespaces); err != nil {
			return nil, nil, false, err
		}
	} else {
		ns, err := chooseNamespace(roleName, role, d.Get("kubernetes_namespace").(string))
		if err != nil {
			return nil, nil, false, err
		}
		namespaces = []string{ns}
	}
	for _, ns := range namespaces {
		listed, err := listAllows(roleName, role, ns)
		if err != nil {
			return nil, nil, false, err
		}
		if !listed {
			bySelector = append(bySelector, ns)
		}
	}
	return namespaces, bySelector, list, nil
}

// chooseNamespace is the requested namespace, well formed, or the role's
// only allowed one.
func chooseNamespace(roleName string, role *roleEntry, requested string) (string, error) {
	if requested == "" {
		if len(role.AllowedNamespaces) == 1 && role.AllowedNamespaces[0] != anyNamespace && role.AllowedNamespaceSelector == "" {
			return role.AllowedNamespaces[0], nil
		}
		return "", userError{fmt.Errorf("role %q needs kubernetes_namespace: it allows %s", roleName, describeAllowed(role))}
	}
	if err := validateNamespaceName("kubernetes_namespace", requested); err != nil {
		return "", userError{err}
	}
	return requested, nil
}

func validateNamespaceList(requested []string) error {
	switch {
	case len(requested) == 0:
		return userError{errors.New("kubernetes_namespaces names no namespace; give one or more, comma-separated")}
	case len(requested) > maxRequestNamespaces:
		return userError{fmt.Errorf("kubernetes_namespaces names %d namespaces; at most %d are allowed", len(requested), maxRequestNamespaces)}
	}
	seen := make(map[string]bool, len(requested))
	for i, ns := range requested {
		if ns == "" {
			return userError{fmt.Errorf("kubernetes_namespaces has an empty entry (position %d)", i+1)}
		}
		if err := validateNamespaceName("kubernetes_namespaces entry", ns); err != nil {
			return userError{err}
		}
		if seen[ns] {
			return userError{fmt.Errorf("kubernetes_namespaces names %q more than once", clip(ns))}
		}
		seen[ns] = true
	}
	return nil
}

// listAllows reports whether the role's list (or "*") allows a well-formed
// namespace; false with no error means its selector must decide.
func listAllows(roleName string, role *roleEntry, ns string) (bool, error) {
	if slices.Contains(role.AllowedNamespaces, anyNamespace) || slices.Contains(role.AllowedNamespaces, ns) {
		return true, nil
	}
	if role.AllowedNamespaceSelector == "" {
		return false, userError{fmt.Errorf("namespace %q is not allowed by role %q (allowed: %s)", ns, roleName, describeAllowed(role))}
	}
	return false, nil
}

// matchSelector checks a well-formed namespace the role's list does not
// allow against its selector, reading the namespace's labels.
func matchSelector(ctx context.Context, api kubeAPI, roleName string, role *roleEntry, requested string) error {
	selector, err := parseNamespaceSelector(role.AllowedNamespaceSelector)
	if err != nil {
		return err // validated at role write; a failure here is internal
	}
	ns, err := api.GetNamespace(ctx, requested)
	if apierrors.IsNotFound(err) {
		return userError{fmt.Errorf("namespace %q does not exist", requested)}
	}
	if err != nil {
		return fmt.Errorf("reading namespace %q to match the role's selector: %w", requested, err)
	}
	if !selector.Matches(labels.Set(ns.Labels)) {
		return userError{fmt.Errorf("namespace %q is not allowed by role %q: its labels do not match %s", requested, roleName, selector)}
	}
	return nil
}

func describeAllowed(role *roleEntry) string {
	s := fmt.Sprintf("namespaces %v", role.AllowedNamespaces)
	if role.AllowedNamespaceSelector != "" {
		s += " and namespaces matching " + role.AllowedNamespaceSelector
	}
	return s
}

// listedNamespaces are the namespaces a role names, without "*".
func listedNamespaces(role *roleEntry) []string {
	return slices.DeleteFunc(slices.Clone(role.AllowedNamespaces), func(ns string) bool { return ns == anyNamespace })
}

// parseNamespaceSelector accepts a LabelSelector as YAML/JSON
// ({matchLabels: {...}, matchExpressions: [...]}) or the kubectl string form
// ("team=a,env in (dev,test)").
func parseNamespaceSelector(raw string) (labels.Selector, error) {
	var ls metav1.LabelSelector
	if err := yaml.UnmarshalStrict([]byte(raw), &ls); err != nil || (ls.MatchLabels == nil && ls.MatchExpressions == nil) {
		parsed, perr := metav1.ParseToLabelSelector(raw)
		if perr != nil {
			return nil, fmt.Errorf("allowed_kubernetes_namespace_selector is neither a LabelSelector object nor a selector string: %s", clip(perr.Error()))
		}
		ls = *parsed
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		return nil, fmt.Errorf("allowed_kubernetes_namespace_selector: %s", clip(err.Error()))
	}
	if sel.Empty() {
		return nil, errors.New("allowed_kubernetes_namespace_selector selects every namespace; use allowed_kubernetes_namespaces=* to mean that")
	}
	return sel, nil
}

// selectorMatches resolves the roles' namespace selectors for one check or
// rbac read, asking the API server once per distinct selector.
type selectorMatches struct {
	api     kubeAPI
	answers map[string]selectorAnswer
}

type selectorAnswer struct {
	namespaces []string
	why        string
}

func newSelectorMatches(api kubeAPI) *selectorMatches {
	return &selectorMatches{api: api, answers: map[string]selectorAnswer{}}
}

// of returns the namespaces role's selector matches now (nil for a role
// without one), or nil and why they cannot be used: the caller then works
// cluster-wide.
func (m *selectorMatches) of(ctx context.Context, role *roleEntry) ([]string, string) {
	sel := role.AllowedNamespaceSelector
	if sel == "" {
		return nil, ""
	}
	a, ok := m.answers[sel]
	if !ok {
		matched, err := m.api.ListNamespaces(ctx, sel)
		switch {
		case err != nil:
			a.why = fmt.Sprintf("cannot list the namespaces its selector matches (%v)", err)
		case len(matched) > maxAllowedNamespaces:
			a.why = fmt.Sprintf("its selector matches more than %d namespaces", maxAllowedNamespaces)
		default:
			a.namespaces = matched
		}
		m.answers[sel] = a
	}
	return a.namespaces, a.why
}
