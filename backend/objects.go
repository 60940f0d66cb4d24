package backend

import (
	"crypto/rand"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// What the plugin writes on Kubernetes objects: references, the labels and
// annotations every object carries, and the objects of a lease (the bound
// Secret, the ephemeral ServiceAccount and RBAC) and of a rotation.

// objectRef names one object a lease owns. Namespace is empty for
// cluster-scoped kinds; UID is empty until the object exists.
type objectRef struct {
	Kind      string    `json:"kind"`
	Namespace string    `json:"namespace,omitempty"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid,omitempty"`
}

func (r objectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

func refOf(kind string, meta metav1.Object) objectRef {
	return objectRef{Kind: kind, Namespace: meta.GetNamespace(), Name: meta.GetName(), UID: meta.GetUID()}
}

const (
	managedByLabel    = "app.kubernetes.io/managed-by"
	managedByValue    = "vault-plugin-scanner"
	managedBySelector = managedByLabel + "=" + managedByValue

	annotationPrefix     = "vault-plugin-scanner/"
	roleAnnotation       = annotationPrefix + "role"
	clusterAnnotation    = annotationPrefix + "cluster"
	expiresAtAnnotation  = annotationPrefix + "expires-at"
	issueAnnotation      = annotationPrefix + "issue-id"
	boundSecretNameStart = "vault-scanner-"
)

// randomString returns n random characters of [a-z0-9].
func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read never returns an error.
	for i, c := range buf {
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf)
}

// randomSecretName returns a DNS-1123 name no other lease will pick
// (36^16 ≈ 8e24). It is chosen before the Secret exists so the WAL entry can
// name it.
func randomSecretName() string {
	return boundSecretNameStart + randomString(16)
}

// boundSecret is the per-lease object the token is bound to; deleting it
// invalidates the token. It holds no data.
func boundSecret(name string, lm leaseMeta) *corev1.Secret {
	return emptySecret(objectMeta(name, lm.role.ServiceAccountNamespace, lm))
}

// emptySecret is an object for a token to be bound to: no data, and
// immutable, so nothing can be stored in it later.
func emptySecret(meta metav1.ObjectMeta) *corev1.Secret {
	immutable := true
	return &corev1.Secret{ObjectMeta: meta, Type: corev1.SecretTypeOpaque, Immutable: &immutable}
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

// plannedObject is one object a lease is about to create.
type plannedObject struct {
	kind string
	obj  metav1.Object
}

func (p plannedObject) ref() objectRef {
	return objectRef{Kind: p.kind, Namespace: p.obj.GetNamespace(), Name: p.obj.GetName()}
}

// rotationSecret is the object a rotated credential is bound to. It is
// labelled like the per-lease Secrets, so tidy removes it after expiresAt.
func rotationSecret(cluster, namespace string, expiresAt time.Time, issueID string) *corev1.Secret {
	return emptySecret(metav1.ObjectMeta{
		Name:      rotationSecretPrefix + randomString(16),
		Namespace: namespace,
		Labels:    map[string]string{managedByLabel: managedByValue},
		Annotations: map[string]string{
			purposeAnnotation:   purposeRotation,
			clusterAnnotation:   cluster,
			expiresAtAnnotation: expiresAt.UTC().Format(time.RFC3339),
			issueAnnotation:     issueID,
		},
	})
}
