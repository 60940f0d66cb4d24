package backend

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

// errNoUID guards the rule that the plugin deletes only objects it knows
// by UID: a name alone may by now belong to someone else.
var errNoUID = errors.New("refusing to delete an object without its UID")

func (c clientsetAPI) CreateObject(ctx context.Context, kind string, obj metav1.Object) (objectRef, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return objectRef{}, err
	}
	out, err := k.create(ctx, c.clientset, obj)
	if err != nil {
		return objectRef{}, kubeCallError(err)
	}
	return refOf(kind, out), nil
}

func (c clientsetAPI) GetObjectMeta(ctx context.Context, ref objectRef) (metav1.Object, error) {
	k, err := lookupKind(ref.Kind)
	if err != nil {
		return nil, err
	}
	out, err := k.get(ctx, c.clientset, ref.Namespace, ref.Name)
	return out, kubeCallError(err)
}

func (c clientsetAPI) DeleteObject(ctx context.Context, ref objectRef) error {
	if ref.UID == "" {
		return fmt.Errorf("%s: %w", ref, errNoUID)
	}
	k, err := lookupKind(ref.Kind)
	if err != nil {
		return err
	}
	uid := ref.UID
	err = k.delete(ctx, c.clientset, ref.Namespace, ref.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	// Conflict means the UID precondition failed: the object the lease owned
	// is gone and a different one now has its name.
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return kubeCallError(err)
}

func (c clientsetAPI) ListManaged(ctx context.Context, kind, namespace string, limit int64, continueToken string) (*metav1.PartialObjectMetadataList, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		// The API server would answer everything at once.
		return nil, fmt.Errorf("listing %s: a page needs a positive limit", k.resource)
	}
	if c.metadata == nil {
		// Lists never fall back to the typed client, which would fetch
		// every Secret's data.
		return nil, fmt.Errorf("listing %s: no metadata-only client", k.resource)
	}
	out, err := c.metadata.Resource(k.resourceVersion()).Namespace(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: managedBySelector, Limit: limit, Continue: continueToken,
	})
	if err != nil {
		return nil, kubeCallError(err)
	}
	return out, nil
}

func (c clientsetAPI) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns, err := c.clientset.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, kubeCallError(err)
	}
	return ns, nil
}

func (c clientsetAPI) ListNamespaces(ctx context.Context, selector string) ([]string, error) {
	sel, err := parseNamespaceSelector(selector)
	if err != nil {
		return nil, err
	}
	list, err := c.clientset.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, kubeCallError(err)
	}
	names := make([]string, 0, len(list.Items))
	for _, ns := range list.Items {
		names = append(names, ns.Name)
	}
	return names, nil
}

// createOutcomeUnknown tells whether a failed create may still have stored
// the object: only a 4xx answer says for sure that it did not.
func createOutcomeUnknown(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code < 400 || code >= 500
	}
	return true
}
