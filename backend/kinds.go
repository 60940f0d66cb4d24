package backend

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
)

// Kinds of objects the plugin creates per lease.
const (
	kindSecret             = "Secret"
	kindServiceAccount     = "ServiceAccount"
	kindRole               = "Role"
	kindClusterRole        = "ClusterRole"
	kindRoleBinding        = "RoleBinding"
	kindClusterRoleBinding = "ClusterRoleBinding"
)

// objectKind is everything the plugin knows about one kind it creates: the
// one place that maps a kind to its API resource, scope, deletion order and
// typed client.
type objectKind struct {
	name       string
	group      string // API group ("" for core)
	resource   string // plural resource name, as RBAC and SelfSubjectAccessReview spell it
	namespaced bool
	// deleteRank orders deletion: rank 0 is what invalidates the token (the
	// bound Secret, the per-lease ServiceAccount) and goes first, so the
	// credential dies even if a later delete fails.
	deleteRank int

	create func(ctx context.Context, cs kubernetes.Interface, obj metav1.Object) (metav1.Object, error)
	get    func(ctx context.Context, cs kubernetes.Interface, namespace, name string) (metav1.Object, error)
	delete func(ctx context.Context, cs kubernetes.Interface, namespace, name string, opts metav1.DeleteOptions) error
}

// resourceVersion names the kind's API resource, for the metadata-only
// client; every kind the plugin creates is served at v1.
func (k *objectKind) resourceVersion() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: k.group, Version: "v1", Resource: k.resource}
}

// objectKinds is immutable after package initialisation.
var objectKinds = map[string]*objectKind{
	kindSecret: newObjectKind(kindSecret, "", "secrets", true, 0,
		func(cs kubernetes.Interface, ns string) typedClient[*corev1.Secret, *corev1.SecretList] {
			return cs.CoreV1().Secrets(ns)
		}),
	kindServiceAccount: newObjectKind(kindServiceAccount, "", "serviceaccounts", true, 0,
		func(cs kubernetes.Interface, ns string) typedClient[*corev1.ServiceAccount, *corev1.ServiceAccountList] {
			return cs.CoreV1().ServiceAccounts(ns)
		}),
	kindRoleBinding: newObjectKind(kindRoleBinding, rbacv1.GroupName, "rolebindings", true, 1,
		func(cs kubernetes.Interface, ns string) typedClient[*rbacv1.RoleBinding, *rbacv1.RoleBindingList] {
			return cs.RbacV1().RoleBindings(ns)
		}),
	kindClusterRoleBinding: newObjectKind(kindClusterRoleBinding, rbacv1.GroupName, "clusterrolebindings", false, 1,
		func(cs kubernetes.Interface, _ string) typedClient[*rbacv1.ClusterRoleBinding, *rbacv1.ClusterRoleBindingList] {
			return cs.RbacV1().ClusterRoleBindings()
		}),
	kindRole: newObjectKind(kindRole, rbacv1.GroupName, "roles", true, 2,
		func(cs kubernetes.Interface, ns string) typedClient[*rbacv1.Role, *rbacv1.RoleList] {
			return cs.RbacV1().Roles(ns)
		}),
	kindClusterRole: newObjectKind(kindClusterRole, rbacv1.GroupName, "clusterroles", false, 2,
		func(cs kubernetes.Interface, _ string) typedClient[*rbacv1.ClusterRole, *rbacv1.ClusterRoleList] {
			return cs.RbacV1().ClusterRoles()
		}),
}

// kindsInDeleteOrder lists objectKinds by deleteRank, for tidy.
var kindsInDeleteOrder = []string{kindSecret, kindServiceAccount, kindRoleBinding, kindClusterRoleBinding, kindRole, kindClusterRole}

func lookupKind(name string) (*objectKind, error) {
	k, ok := objectKinds[name]
	if !ok {
		return nil, fmt.Errorf("unknown object kind %q", name)
	}
	return k, nil
}

// typedClient is the part of client-go's generated per-kind clients the
// plugin uses. Lists go through the metadata-only client instead, so that
// no Secret's data is ever read.
type typedClient[P metav1.Object, L runtime.Object] interface {
	Create(ctx context.Context, obj P, opts metav1.CreateOptions) (P, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (P, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

func newObjectKind[P metav1.Object, L runtime.Object](name, group, resource string, namespaced bool, deleteRank int, client func(kubernetes.Interface, string) typedClient[P, L]) *objectKind {
	return &objectKind{
		name: name, group: group, resource: resource, namespaced: namespaced, deleteRank: deleteRank,
		create: func(ctx context.Context, cs kubernetes.Interface, obj metav1.Object) (metav1.Object, error) {
			typed, ok := obj.(P)
			if !ok {
				return nil, fmt.Errorf("a %T is not a %s", obj, name)
			}
			return client(cs, obj.GetNamespace()).Create(ctx, typed, metav1.CreateOptions{})
		},
		get: func(ctx context.Context, cs kubernetes.Interface, namespace, objName string) (metav1.Object, error) {
			return client(cs, namespace).Get(ctx, objName, metav1.GetOptions{})
		},
		delete: func(ctx context.Context, cs kubernetes.Interface, namespace, objName string, opts metav1.DeleteOptions) error {
			return client(cs, namespace).Delete(ctx, objName, opts)
		},
	}
}
