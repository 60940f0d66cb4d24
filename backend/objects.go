package backend

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

func (c clientsetAPI) CreateObject(ctx context.Context, obj metav1.Object) (objectRef, error) {
	opts := metav1.CreateOptions{}
	var out metav1.Object
	var err error
	var kind string
	switch o := obj.(type) {
	case *corev1.Secret:
		kind = kindSecret
		out, err = c.clientset.CoreV1().Secrets(o.Namespace).Create(ctx, o, opts)
	case *corev1.ServiceAccount:
		kind = kindServiceAccount
		out, err = c.clientset.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.Role:
		kind = kindRole
		out, err = c.clientset.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		kind = kindClusterRole
		out, err = c.clientset.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		kind = kindRoleBinding
		out, err = c.clientset.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		kind = kindClusterRoleBinding
		out, err = c.clientset.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	default:
		return objectRef{}, fmt.Errorf("cannot create a %T", obj)
	}
	if err != nil {
		return objectRef{}, err
	}
	return refOf(kind, out), nil
}

func (c clientsetAPI) GetObjectMeta(ctx context.Context, ref objectRef) (metav1.Object, error) {
	opts := metav1.GetOptions{}
	switch ref.Kind {
	case kindSecret:
		return c.clientset.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, opts)
	case kindServiceAccount:
		return c.clientset.CoreV1().ServiceAccounts(ref.Namespace).Get(ctx, ref.Name, opts)
	case kindRole:
		return c.clientset.RbacV1().Roles(ref.Namespace).Get(ctx, ref.Name, opts)
	case kindClusterRole:
		return c.clientset.RbacV1().ClusterRoles().Get(ctx, ref.Name, opts)
	case kindRoleBinding:
		return c.clientset.RbacV1().RoleBindings(ref.Namespace).Get(ctx, ref.Name, opts)
	case kindClusterRoleBinding:
		return c.clientset.RbacV1().ClusterRoleBindings().Get(ctx, ref.Name, opts)
	}
	return nil, fmt.Errorf("unknown kind %q", ref.Kind)
}

func (c clientsetAPI) DeleteObject(ctx context.Context, ref objectRef) error {
	opts := metav1.DeleteOptions{}
	if ref.UID != "" {
		uid := ref.UID
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	var err error
	switch ref.Kind {
	case kindSecret:
		err = c.clientset.CoreV1().Secrets(ref.Namespace).Delete(ctx, ref.Name, opts)
	case kindServiceAccount:
		err = c.clientset.CoreV1().ServiceAccounts(ref.Namespace).Delete(ctx, ref.Name, opts)
	case kindRole:
		err = c.clientset.RbacV1().Roles(ref.Namespace).Delete(ctx, ref.Name, opts)
	case kindClusterRole:
		err = c.clientset.RbacV1().ClusterRoles().Delete(ctx, ref.Name, opts)
	case kindRoleBinding:
		err = c.clientset.RbacV1().RoleBindings(ref.Namespace).Delete(ctx, ref.Name, opts)
	case kindClusterRoleBinding:
		err = c.clientset.RbacV1().ClusterRoleBindings().Delete(ctx, ref.Name, opts)
	default:
		return fmt.Errorf("unknown kind %q", ref.Kind)
	}
	// Conflict means the UID precondition failed: the object the lease owned
	// is gone and a different one now has its name.
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func (c clientsetAPI) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	return c.clientset.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
}

func (c clientsetAPI) ListNamespaces(ctx context.Context, selector string) ([]string, error) {
	sel, err := parseNamespaceSelector(selector)
	if err != nil {
		return nil, err
	}
	list, err := c.clientset.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list.Items))
	for _, ns := range list.Items {
		names = append(names, ns.Name)
	}
	return names, nil
}
