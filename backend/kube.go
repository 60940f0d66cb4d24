package backend

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// The plugin's one view of the Kubernetes API: the narrow kubeAPI
// interface, its client-go implementation, and the table of the kinds the
// plugin creates (group, resource, scope, deletion order, typed client).

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

// kindsInDeleteOrder lists objectKinds by deleteRank (namespaced kinds
// before cluster-scoped ones of the same rank), for tidy.
var kindsInDeleteOrder = func() []string {
	kinds := slices.Collect(maps.Keys(objectKinds))
	slices.SortFunc(kinds, func(a, b string) int {
		ka, kb := objectKinds[a], objectKinds[b]
		if ka.deleteRank != kb.deleteRank {
			return ka.deleteRank - kb.deleteRank
		}
		if ka.namespaced != kb.namespaced {
			if ka.namespaced {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return kinds
}()

// kindAccess is one right on a kind of the table, as an access review asks
// it; subresource and name may be empty.
func kindAccess(verb, kind, subresource, name, namespace string) authorizationv1.ResourceAttributes {
	k := objectKinds[kind]
	return authorizationv1.ResourceAttributes{Verb: verb, Group: k.group, Resource: k.resource, Subresource: subresource, Name: name, Namespace: namespace}
}

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

// kubeAPI is the narrow slice of the Kubernetes API the plugin uses. The real
// implementation wraps a clientset; tests wrap client-go's fake clientset.
// Errors from the API server, or from the network on the way to it, are
// marked (kubeCallError) so the handler can tell them from the plugin's own.
type kubeAPI interface {
	// CreateObject creates an object of one of objectKinds and returns its
	// reference with UID.
	CreateObject(ctx context.Context, kind string, obj metav1.Object) (objectRef, error)
	GetObjectMeta(ctx context.Context, ref objectRef) (metav1.Object, error)
	// DeleteObject deletes the object only if it still has ref's UID, and
	// refuses a ref without one. A missing object, or one replaced by
	// another, counts as deleted.
	DeleteObject(ctx context.Context, ref objectRef) error
	// ListManaged lists one page, of at most limit objects, of the
	// metadata of the objects of kind labelled as the plugin's in namespace
	// ("" for all, or for a cluster-scoped kind), from continueToken (""
	// for the first page; the list's Continue names the next, "" after the
	// last). Only metadata crosses the wire: the plugin never holds the data
	// of Secrets it did not make, nor needs that of its own.
	ListManaged(ctx context.Context, kind, namespace string, limit int64, continueToken string) (*metav1.PartialObjectMetadataList, error)
	GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error)
	// ListNamespaces names the namespaces whose labels match selector.
	ListNamespaces(ctx context.Context, selector string) ([]string, error)
	// GetPod reads one pod: its namespace, name and container names.
	GetPod(ctx context.Context, namespace, name string) (podTarget, error)
	// ListPods lists at most limit pods of namespace whose labels match
	// selector (the kubectl string form), sorted by name.
	ListPods(ctx context.Context, namespace, selector string, limit int64) ([]podTarget, error)
	CreateToken(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error)
	ServerVersion(ctx context.Context) (string, error)
	// Allowed asks the API server whether the plugin's own credential may do
	// what attrs describe (SelfSubjectAccessReview).
	Allowed(ctx context.Context, attrs authorizationv1.ResourceAttributes) (bool, error)
	// WhoAmI returns the user name the API server authenticates the
	// plugin's credential as (SelfSubjectReview).
	WhoAmI(ctx context.Context) (string, error)
}

// clientsetAPI implements kubeAPI on top of a client-go clientset.
type clientsetAPI struct {
	clientset kubernetes.Interface
	// metadata lists objects as PartialObjectMetadata, for tidy.
	metadata metadata.Interface
}

var _ kubeAPI = clientsetAPI{}

func (c clientsetAPI) CreateToken(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	out, err := c.clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	return out, kubeCallError(err)
}

func (c clientsetAPI) ServerVersion(ctx context.Context) (string, error) {
	info, err := c.clientset.Discovery().ServerVersion()
	if err != nil {
		return "", kubeCallError(err)
	}
	return info.GitVersion, nil
}

func (c clientsetAPI) Allowed(ctx context.Context, attrs authorizationv1.ResourceAttributes) (bool, error) {
	review := &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs},
	}
	out, err := c.clientset.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, kubeCallError(err)
	}
	return out.Status.Allowed, nil
}

func (c clientsetAPI) WhoAmI(ctx context.Context) (string, error) {
	out, err := c.clientset.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", kubeCallError(err)
	}
	return out.Status.UserInfo.Username, nil
}

// newClientsetAPI builds the real client for one cluster.
func newClientsetAPI(cfg *rest.Config) (kubeAPI, error) {
	if cfg.Insecure {
		return nil, errors.New("refusing a Kubernetes client without TLS verification")
	}
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("kubernetes host must be an https:// URL")
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building HTTP client: %w", err)
	}
	// The bearer token is added by a round tripper to every request it sees,
	// including redirected ones, so never follow a redirect: it could carry
	// the plugin's credential to another host. The API never redirects these calls.
	httpClient.CheckRedirect = func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}
	clientset, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("building Kubernetes client: %w", err)
	}
	// Same configuration and HTTP client: same TLS, credential and
	// no-redirect rule.
	meta, err := metadata.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("building Kubernetes metadata client: %w", err)
	}
	return clientsetAPI{clientset: clientset, metadata: meta}, nil
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

func (c clientsetAPI) GetPod(ctx context.Context, namespace, name string) (podTarget, error) {
	pod, err := c.clientset.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return podTarget{}, kubeCallError(err)
	}
	return podTargetOf(pod), nil
}

func (c clientsetAPI) ListPods(ctx context.Context, namespace, selector string, limit int64) ([]podTarget, error) {
	if limit <= 0 {
		return nil, errors.New("listing pods: a page needs a positive limit")
	}
	if selector == "" {
		return nil, errors.New("listing pods: refusing an empty selector")
	}
	list, err := c.clientset.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector, Limit: limit})
	if err != nil {
		return nil, kubeCallError(err)
	}
	out := make([]podTarget, 0, min(len(list.Items), int(limit)))
	for i := range list.Items {
		if int64(len(out)) == limit {
			break // an API server that ignored the limit
		}
		out = append(out, podTargetOf(&list.Items[i]))
	}
	slices.SortFunc(out, func(a, b podTarget) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// podTargetOf keeps only what a target needs of a pod: the plugin reads
// pods (their specs may hold environment values) and keeps no more than
// names.
func podTargetOf(pod *corev1.Pod) podTarget {
	containers := make([]string, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		containers[i] = c.Name
	}
	return podTarget{Namespace: pod.Namespace, Name: pod.Name, Containers: containers}
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
