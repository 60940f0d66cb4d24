package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// maxRequestNamespaces bounds kubernetes_namespaces: each namespace costs
// a binding (and a Role) to create, check and revoke.
const maxRequestNamespaces = 32

// resolveNamespace picks and checks the namespace of an ephemeral lease.
func resolveNamespace(ctx context.Context, api kubeAPI, roleName string, role *roleEntry, requested string) (string, error) {
	ns, err := chooseNamespace(roleName, role, requested)
	if err != nil {
		return "", err
	}
	return ns, checkNamespaceAllowed(ctx, api, roleName, role, ns)
}

// resolveNamespaces checks kubernetes_namespaces: every entry well formed
// and distinct, at most maxRequestNamespaces of them (all checked before
// the API server is asked anything), then each allowed by the role exactly
// as kubernetes_namespace is.
func resolveNamespaces(ctx context.Context, api kubeAPI, roleName string, role *roleEntry, requested []string) ([]string, error) {
	if err := validateNamespaceList(requested); err != nil {
		return nil, err
	}
	for _, ns := range requested {
		if err := checkNamespaceAllowed(ctx, api, roleName, role, ns); err != nil {
			return nil, err
		}
	}
	return slices.Clone(requested), nil
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

// checkNamespaceAllowed checks a well-formed namespace against the role's
// list, "*" and selector (reading the namespace's labels).
func checkNamespaceAllowed(ctx context.Context, api kubeAPI, roleName string, role *roleEntry, requested string) error {
	if listed, err := listAllows(roleName, role, requested); listed || err != nil {
		return err
	}
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

// leaseMeta is what every object of one lease is labelled and annotated
// with.
type leaseMeta struct {
	roleName  string
	role      *roleEntry
	expiresAt time.Time
	// issueID is unique to one issue: rollback deletes an object it holds
	// no UID for only when the object carries it.
	issueID string
}

// objectMeta is the metadata every object of a lease carries.
func objectMeta(name, namespace string, lm leaseMeta) metav1.ObjectMeta {
	lbls := map[string]string{}
	for k, v := range lm.role.ExtraLabels {
		lbls[k] = v
	}
	lbls[managedByLabel] = managedByValue
	annotations := map[string]string{}
	for k, v := range lm.role.ExtraAnnotations {
		annotations[k] = v
	}
	annotations[roleAnnotation] = lm.roleName
	annotations[clusterAnnotation] = lm.role.Cluster
	annotations[expiresAtAnnotation] = lm.expiresAt.UTC().Format(time.RFC3339)
	annotations[issueAnnotation] = lm.issueID
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: lbls, Annotations: annotations}
}

// ephemeralObjects are what one ephemeral lease creates, in creation order:
// the ServiceAccount first (it owns the namespaced rest in its namespace),
// then a generated ClusterRole, then per namespace of the lease a generated
// Role and the binding (or one ClusterRoleBinding).
func ephemeralObjects(name string, ir *issueRequest, lm leaseMeta) ([]plannedObject, error) {
	role := ir.role
	meta := func(namespace string) metav1.ObjectMeta { return objectMeta(name, namespace, lm) }
	objs := []plannedObject{{kindServiceAccount, &corev1.ServiceAccount{ObjectMeta: meta(ir.namespace)}}}

	var rules []rbacv1.PolicyRule
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: role.KubernetesRoleType, Name: role.KubernetesRoleName}
	if role.mode() == modeGeneratedRole {
		var err error
		if rules, err = parseRules(role.GeneratedRoleRules, role.KubernetesRoleType); err != nil {
			return nil, userError{fmt.Errorf("role %q can no longer be issued; write it again: %w", ir.roleName, err)}
		}
		roleRef.Name = name
		if role.KubernetesRoleType == kindClusterRole {
			objs = append(objs, plannedObject{kindClusterRole, &rbacv1.ClusterRole{ObjectMeta: clusterRoleMeta(meta("")), Rules: rules}})
		}
	}
	// Every binding names the one ServiceAccount, in the first namespace.
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ir.namespace}}
	if ir.clusterRoleBinding {
		objs = append(objs, plannedObject{kindClusterRoleBinding, &rbacv1.ClusterRoleBinding{ObjectMeta: meta(""), RoleRef: roleRef, Subjects: subjects}})
		return objs, nil
	}
	for _, ns := range ir.leaseNamespaces() {
		if role.mode() == modeGeneratedRole && role.KubernetesRoleType == kindRole {
			objs = append(objs, plannedObject{kindRole, &rbacv1.Role{ObjectMeta: meta(ns), Rules: slices.Clone(rules)}})
		}
		objs = append(objs, plannedObject{kindRoleBinding, &rbacv1.RoleBinding{ObjectMeta: meta(ns), RoleRef: roleRef, Subjects: slices.Clone(subjects)}})
	}
	return objs, nil
}

// clusterRoleMeta drops the role's extra_labels from a generated
// ClusterRole: an aggregated ClusterRole anywhere in the cluster whose
// aggregationRule selects one of them would copy the lease's rules to its
// own subjects, who hold no lease. Only the plugin's own label stays (tidy
// needs it); aggregation selects by labels only, so annotations stay too.
func clusterRoleMeta(meta metav1.ObjectMeta) metav1.ObjectMeta {
	meta.Labels = map[string]string{managedByLabel: managedByValue}
	return meta
}

// ownedBy makes obj owned by the lease's first object, so Kubernetes' garbage
// collector removes it even if a revoke never ran. Owners must be namespaced
// alike: cluster-scoped objects get no owner and are deleted by revoke.
func ownedBy(obj metav1.Object, owner objectRef) {
	if obj.GetNamespace() == "" || obj.GetNamespace() != owner.Namespace {
		return
	}
	obj.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: owner.Kind, Name: owner.Name, UID: owner.UID}})
}

func parseClusterRoleBinding(ir *issueRequest, asked bool) error {
	if !asked {
		return nil
	}
	if !ir.role.AllowClusterRoleBinding {
		return errors.New("cluster_role_binding is not allowed by this role (allow_cluster_role_binding)")
	}
	ir.clusterRoleBinding = true
	return nil
}
