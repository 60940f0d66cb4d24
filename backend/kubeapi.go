package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

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
