package backend

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

// The unit tests' one Kubernetes API server, seen through kubeAPI. The wire
// (TLS, HTTP status codes, client-go's retries) is fake_apiserver_test.go's.
//
// fakeKube imitates the parts of the API server the plugin uses: created
// objects get UIDs, deletes honour UID preconditions, TokenRequest checks
// the service account, the bound Secret and the 10-minute minimum, and
// SelfSubjectAccessReviews answer as deploy/'s RBAC does, like the real
// one. What differs per test is set by options (newFakeKube) or setters:
//
//   - inMemory: objects in a map instead of client-go's tracker, for
//     benchmarks (the tracker's per-create REST mapper costs more than
//     everything the plugin does);
//   - setAuthorizer: what SelfSubjectAccessReviews allow;
//   - as(token) / authenticating: clients that present one bearer token and
//     fail with 401 once it is dead, as the real API server does;
//   - failCalls, setTokenErr: calls that fail;
//   - maxExpiry, noJTI: the API server's token flags;
//   - clientset (clientset mode): client-go's fake clientset, to prepend
//     reactors to, read objects from or count actions of.
type fakeKube struct {
	// clientset holds the objects unless the fake is inMemory (then nil).
	// Tests prepend reactors to it to observe or break single calls.
	clientset *fake.Clientset
	mem       *memObjects // the objects of an inMemory fake
	// metadataLists counts the pages served by the metadata-only client.
	metadataLists atomic.Int32

	mu        sync.Mutex
	issued    []authenticationv1.TokenRequest // requests as received
	tokenErr  error                           // returned by TokenRequest when set
	maxExpiry time.Duration                   // imitates --service-account-max-token-expiration
	noJTI     bool
	// authorize answers SelfSubjectAccessReviews; nil: deployRights.
	authorize func(authorizationv1.ResourceAttributes) bool
	reviewMu  sync.Mutex            // held while authorize runs
	faults    map[string]*fakeFault // inMemory: by "verb resource"
	// authenticating: clients built by factory present their bearer token
	// (as).
	authenticating bool

	built      atomic.Int32 // clients built by the backend's factory
	lastConfig atomic.Pointer[rest.Config]
}

// fakeKubeOption sets what one test needs of the fake at construction.
type fakeKubeOption func(*fakeKube)

// inMemory keeps objects in a map rather than client-go's fake clientset:
// the same answers, without reactors, recorded actions or recorded
// TokenRequests, at a fraction of the cost. For benchmarks.
func inMemory() fakeKubeOption {
	return func(fk *fakeKube) { fk.mem = &memObjects{objects: map[memKey]*metav1.PartialObjectMetadata{}} }
}

// authenticating makes the clients the backend builds present their bearer
// token like the real API server (see as).
func authenticating() fakeKubeOption {
	return func(fk *fakeKube) { fk.authenticating = true }
}

// withAuthorizer answers SelfSubjectAccessReviews with allow (see
// setAuthorizer).
func withAuthorizer(allow func(authorizationv1.ResourceAttributes) bool) fakeKubeOption {
	return func(fk *fakeKube) { fk.authorize = allow }
}

// newFakeKube returns a fake API server holding testNamespace and testSA.
func newFakeKube(t testing.TB, opts ...fakeKubeOption) *fakeKube {
	t.Helper()
	fk := &fakeKube{}
	for _, opt := range opts {
		opt(fk)
	}
	seed := []metav1.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: testSA, Namespace: testNamespace, UID: "sa-uid"}},
	}
	if fk.mem != nil {
		for _, obj := range seed {
			fk.mem.put(kindOf(obj), obj)
		}
		return fk
	}
	// The simple tracker: the plugin never applies or reads managed fields,
	// and NewClientset's tracker builds a REST mapper of the whole scheme on
	// every create, which made a fuzz run manage a few executions a second.
	fk.clientset = fake.NewSimpleClientset(seed[0].(runtime.Object), seed[1].(runtime.Object))
	// Created objects get UIDs, as from the API server.
	fk.clientset.PrependReactor("create", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if obj, ok := action.(k8stesting.CreateAction).GetObject().(metav1.Object); ok && obj.GetUID() == "" && action.GetSubresource() == "" {
			obj.SetUID(types.UID(uuid.NewString()))
		}
		return false, nil, nil
	})
	// Deletes honour UID preconditions, as the API server does.
	fk.clientset.PrependReactor("delete", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		del := action.(k8stesting.DeleteActionImpl)
		pre := del.DeleteOptions.Preconditions
		if pre == nil || pre.UID == nil {
			return false, nil, nil
		}
		obj, err := fk.clientset.Tracker().Get(del.Resource, del.Namespace, del.Name)
		if err != nil {
			return true, nil, err
		}
		if uid := obj.(metav1.Object).GetUID(); uid != *pre.UID {
			return true, nil, uidConflict(del.Resource.GroupResource(), del.Name, *pre.UID, uid)
		}
		return false, nil, nil
	})
	fk.clientset.PrependReactor("create", "serviceaccounts", fk.tokenRequestReactor)
	fk.clientset.PrependReactor("create", "selfsubjectreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		review := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.SelfSubjectReview).DeepCopy()
		review.Status.UserInfo.Username = testRequesterUser
		return true, review, nil
	})
	fk.clientset.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		review := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		review.Status.Allowed = fk.allowed(*review.Spec.ResourceAttributes)
		return true, review, nil
	})
	return fk
}

func uidConflict(gr schema.GroupResource, name string, want, got types.UID) error {
	return apierrors.NewConflict(gr, name, fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", want, got))
}

// deployRights is what deploy/ grants the plugin's credential: everything,
// except minting tokens for service accounts it was not granted by name
// (deploy/ lists them with resourceNames).
func deployRights(attrs authorizationv1.ResourceAttributes) bool {
	return !isAnyTokenReview(&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}})
}

// isAnyTokenReview tells the review the plugin sends to learn whether it
// may mint a token for any service account, which deploy/ never grants for
// the namespaces of existing-account roles.
func isAnyTokenReview(review *authorizationv1.SelfSubjectAccessReview) bool {
	attrs := review.Spec.ResourceAttributes
	return attrs != nil && attrs.Resource == "serviceaccounts" && attrs.Subresource == "token" && attrs.Name == ""
}

// setAuthorizer makes SelfSubjectAccessReviews answer allow(attributes)
// from now on; nil restores deployRights.
func (fk *fakeKube) setAuthorizer(allow func(authorizationv1.ResourceAttributes) bool) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.authorize = allow
}

func (fk *fakeKube) allowed(attrs authorizationv1.ResourceAttributes) bool {
	fk.mu.Lock()
	allow := fk.authorize
	fk.mu.Unlock()
	if allow == nil {
		allow = deployRights
	}
	// One review at a time, as client-go's fake runs its reactors, so a
	// test's authorizer may record what it is asked without a lock.
	fk.reviewMu.Lock()
	defer fk.reviewMu.Unlock()
	return allow(attrs)
}

// api is the kubeAPI the backend's factory returns for fk: in clientset
// mode the real client-go implementation over the fake clientset.
func (fk *fakeKube) api() kubeAPI {
	if fk.mem != nil {
		return memAPI{fk: fk}
	}
	return clientsetAPI{clientset: fk.clientset, metadata: fakeMetadata{fk: fk}}
}

// factory is a backend's newKubeAPI whose clients talk to fk; it counts them
// and keeps the last configuration.
func (fk *fakeKube) factory() func(*rest.Config) (kubeAPI, error) {
	return func(cfg *rest.Config) (kubeAPI, error) {
		fk.built.Add(1)
		fk.lastConfig.Store(cfg)
		if fk.authenticating {
			return fk.as(cfg.BearerToken), nil
		}
		return fk.api(), nil
	}
}

// fakeFault makes calls of one verb on one resource fail while set.
type fakeFault struct {
	err error
	on  atomic.Bool
}

// failCalls makes calls of verb ("create", "get", "delete", "list") on
// resource (plural, as "secrets") answer err while the returned flag is set
// (it starts set).
func (fk *fakeKube) failCalls(verb, resource string, err error) *atomic.Bool {
	f := &fakeFault{err: err}
	f.on.Store(true)
	if fk.mem != nil {
		fk.mu.Lock()
		if fk.faults == nil {
			fk.faults = map[string]*fakeFault{}
		}
		fk.faults[verb+" "+resource] = f
		fk.mu.Unlock()
		return &f.on
	}
	fk.clientset.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if f.on.Load() {
			return true, nil, f.err
		}
		return false, nil, nil
	})
	return &f.on
}

// fault is the error an inMemory fake answers a call with, if any.
func (fk *fakeKube) fault(verb, resource string) error {
	fk.mu.Lock()
	f := fk.faults[verb+" "+resource]
	fk.mu.Unlock()
	if f != nil && f.on.Load() {
		return f.err
	}
	return nil
}

var errTokenRequestFailed = apierrors.NewInternalError(errors.New("etcdserver: request timed out"))

// failSecretDeletes makes Secret deletes answer 503 while the returned flag
// is set (it starts set).
func failSecretDeletes(fk *fakeKube) *atomic.Bool {
	return fk.failCalls("delete", "secrets", apierrors.NewServiceUnavailable("apiserver is down"))
}

func (fk *fakeKube) setTokenErr(err error) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.tokenErr = err
}

// addPod creates a pod in ns with labels and containers (default: one
// named "app"); without nodes it stays Pending, which is all the plugin
// reads.
func (fk *fakeKube) addPod(t testing.TB, ns, name string, lbls map[string]string, containers ...string) {
	t.Helper()
	if len(containers) == 0 {
		containers = []string{"app"}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls}}
	for _, c := range containers {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c, Image: "registry.example/" + c})
	}
	if _, err := fk.clientset.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// tokenRequests are the TokenRequests received (none if inMemory).
func (fk *fakeKube) tokenRequests() []authenticationv1.TokenRequest {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return append([]authenticationv1.TokenRequest(nil), fk.issued...)
}

// secretUID is the UID of the Secret ns/name, if it exists.
func (fk *fakeKube) secretUID(ns, name string) (types.UID, error) {
	if fk.mem != nil {
		m, err := fk.mem.get(objectRef{Kind: kindSecret, Namespace: ns, Name: name})
		if err != nil {
			return "", err
		}
		return m.UID, nil
	}
	obj, err := fk.clientset.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, ns, name)
	if err != nil {
		return "", err
	}
	return obj.(*corev1.Secret).UID, nil
}

func (fk *fakeKube) tokenRequestReactor(action k8stesting.Action) (bool, runtime.Object, error) {
	create := action.(k8stesting.CreateAction)
	if create.GetSubresource() != "token" {
		return false, nil, nil
	}
	out, err := fk.mintToken(create.GetNamespace(), action.(k8stesting.CreateActionImpl).Name, create.GetObject().(*authenticationv1.TokenRequest))
	return true, out, err
}

// mintToken answers a TokenRequest for ns/saName as the API server does.
func (fk *fakeKube) mintToken(ns, saName string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	fk.mu.Lock()
	if fk.mem == nil { // an inMemory fake serves benchmarks: it keeps nothing per call
		fk.issued = append(fk.issued, *tr.DeepCopy())
	}
	tokenErr, maxExpiry, noJTI := fk.tokenErr, fk.maxExpiry, fk.noJTI
	fk.mu.Unlock()
	if tokenErr != nil {
		return nil, tokenErr
	}
	if fk.mem != nil {
		if _, err := fk.mem.get(objectRef{Kind: kindServiceAccount, Namespace: ns, Name: saName}); err != nil {
			return nil, err
		}
	} else if _, err := fk.clientset.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, ns, saName); err != nil {
		return nil, err
	}
	if secs := tr.Spec.ExpirationSeconds; secs == nil || *secs < 600 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: "authentication.k8s.io", Kind: "TokenRequest"}, saName, nil)
	}
	ref := tr.Spec.BoundObjectRef
	if ref != nil {
		if ref.Kind != "Secret" {
			return nil, fmt.Errorf("the plugin binds tokens only to Secrets, got %s", ref.Kind)
		}
		uid, err := fk.secretUID(ns, ref.Name)
		if err != nil {
			return nil, err
		}
		if uid != ref.UID {
			return nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, ref.Name, fmt.Errorf("the UID in the bound object reference does not match"))
		}
	}
	lifetime := time.Duration(*tr.Spec.ExpirationSeconds) * time.Second
	if maxExpiry > 0 && lifetime > maxExpiry {
		lifetime = maxExpiry
	}
	// The API server's timestamps have whole seconds.
	exp := time.Now().Add(lifetime).Truncate(time.Second)
	k8sClaim := map[string]interface{}{"namespace": ns}
	if ref != nil {
		k8sClaim["secret"] = map[string]interface{}{"name": ref.Name, "uid": string(ref.UID)}
	}
	claims := map[string]interface{}{
		"aud":           tr.Spec.Audiences,
		"exp":           exp.Unix(),
		"sub":           "system:serviceaccount:" + ns + ":" + saName,
		"kubernetes.io": k8sClaim,
	}
	if !noJTI {
		claims["jti"] = uuid.NewString()
	}
	out := tr.DeepCopy()
	out.Status = authenticationv1.TokenRequestStatus{Token: fakeJWT(claims), ExpirationTimestamp: metav1.NewTime(exp)}
	return out, nil
}

func fakeJWT(claims map[string]interface{}) string {
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"test"}`)) + "." + enc(payload) + "." + enc([]byte("signature"))
}

// listManaged lists the metadata of the objects of kind labelled as the
// plugin's in ns ("" for all), in one page.
func (fk *fakeKube) listManaged(kind, ns string) ([]metav1.Object, error) {
	return fk.listMeta(kind, ns, managedBySelector)
}

// listMeta lists the metadata of the objects of kind in ns matching
// selector, in one page, straight from the fake.
func (fk *fakeKube) listMeta(kind, ns, selector string) ([]metav1.Object, error) {
	var list *metav1.PartialObjectMetadataList
	var err error
	if fk.mem != nil {
		list, err = fk.mem.list(kind, ns, selector)
	} else {
		list, err = fakeMetadata{fk: fk, resource: objectKinds[kind].resourceVersion(), namespace: ns}.List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	}
	if err != nil {
		return nil, err
	}
	out := make([]metav1.Object, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// managedSecrets lists the Secrets the plugin created, in all namespaces.
func (fk *fakeKube) managedSecrets(t testing.TB) []corev1.Secret {
	t.Helper()
	if fk.mem != nil {
		list, err := fk.mem.list(kindSecret, "", managedBySelector)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]corev1.Secret, len(list.Items))
		for i, m := range list.Items {
			out[i] = corev1.Secret{ObjectMeta: m.ObjectMeta}
		}
		return out
	}
	list, err := fk.clientset.CoreV1().Secrets("").List(context.Background(), metav1.ListOptions{LabelSelector: managedBySelector})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// fakeMetadata is fakeKube's metadata-only client: it serves lists of
// PartialObjectMetadata from the clientset's tracker, with Limit and
// Continue as the API server does (client-go's metadata fake drops both).
// Lists go through the clientset's reactors, so a test that forbids or
// breaks a list there breaks the metadata list too. Only List is
// implemented; the embedded nil interface panics on anything else.
type fakeMetadata struct {
	metadata.ResourceInterface
	fk        *fakeKube
	resource  schema.GroupVersionResource
	namespace string
}

func (f fakeMetadata) Resource(resource schema.GroupVersionResource) metadata.Getter {
	f.resource = resource
	return f
}

func (f fakeMetadata) Namespace(ns string) metadata.ResourceInterface {
	f.namespace = ns
	return f
}

func (f fakeMetadata) List(_ context.Context, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	f.fk.metadataLists.Add(1)
	var kind *objectKind
	for _, k := range objectKinds {
		if k.resourceVersion() == f.resource {
			kind = k
		}
	}
	if kind == nil {
		return nil, fmt.Errorf("fake metadata client: unknown resource %v", f.resource)
	}
	gvk := schema.GroupVersionKind{Group: kind.group, Version: "v1", Kind: kind.name}
	typed, err := f.fk.clientset.Invokes(k8stesting.NewListActionWithOptions(f.resource, gvk, f.namespace, opts), nil)
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(typed)
	if err != nil {
		return nil, err
	}
	selector, err := labels.Parse(opts.LabelSelector)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	out := &metav1.PartialObjectMetadataList{}
	for _, item := range items {
		m := item.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
		if !selector.Matches(labels.Set(m.Labels)) {
			continue
		}
		out.Items = append(out.Items, metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"},
			ObjectMeta: *m.DeepCopy(),
		})
	}
	slices.SortFunc(out.Items, compareMeta)
	return page(out, opts.Limit, opts.Continue), nil
}

// compareMeta orders list pages: by namespace, then name.
func compareMeta(a, b metav1.PartialObjectMetadata) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// page cuts the sorted list to the page after continueToken (the last key
// served) of at most limit items (0: all), as the API server pages.
func page(list *metav1.PartialObjectMetadataList, limit int64, continueToken string) *metav1.PartialObjectMetadataList {
	items := list.Items
	if continueToken != "" {
		var last metav1.PartialObjectMetadata
		last.Namespace, last.Name, _ = strings.Cut(continueToken, "/")
		start, found := slices.BinarySearchFunc(items, last, compareMeta)
		if found {
			start++
		}
		items = items[start:]
	}
	out := &metav1.PartialObjectMetadataList{Items: items}
	if limit > 0 && int64(len(items)) > limit {
		out.Items = items[:limit]
		last := out.Items[len(out.Items)-1]
		out.Continue = last.Namespace + "/" + last.Name
	}
	return out
}

// authKube is fakeKube seen through one bearer token: every call fails with
// 401 once the token is dead (its bound Secret deleted or replaced, or its
// exp passed), as the real API server does. Build it with fakeKube.as.
type authKube struct {
	kubeAPI
	fk    *fakeKube
	token string
}

// as is the client of fk that presents token.
func (fk *fakeKube) as(token string) authKube {
	return authKube{kubeAPI: fk.api(), fk: fk, token: token}
}

func (a authKube) authenticate() error {
	claims, err := parseTokenClaims(a.token)
	if err != nil {
		return kubeCallError(apierrors.NewUnauthorized("invalid bearer token"))
	}
	if exp := claims.expiresAt(); !exp.IsZero() && time.Now().After(exp) {
		return kubeCallError(apierrors.NewUnauthorized("token has expired"))
	}
	if bound := claims.Kubernetes.Secret; bound.Name != "" {
		uid, err := a.fk.secretUID(claims.Kubernetes.Namespace, bound.Name)
		if err != nil || string(uid) != bound.UID {
			return kubeCallError(apierrors.NewUnauthorized("service account token has been invalidated"))
		}
	}
	return nil
}

// WhoAmI answers the token's subject, as the API server's authenticator
// does for service-account tokens.
func (a authKube) WhoAmI(context.Context) (string, error) {
	if err := a.authenticate(); err != nil {
		return "", err
	}
	claims, _ := parseTokenClaims(a.token)
	return claims.Sub, nil
}

func (a authKube) CreateToken(ctx context.Context, ns, sa string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	if err := a.authenticate(); err != nil {
		return nil, err
	}
	return a.kubeAPI.CreateToken(ctx, ns, sa, req)
}

func (a authKube) CreateObject(ctx context.Context, kind string, obj metav1.Object) (objectRef, error) {
	if err := a.authenticate(); err != nil {
		return objectRef{}, err
	}
	return a.kubeAPI.CreateObject(ctx, kind, obj)
}

func (a authKube) GetObjectMeta(ctx context.Context, ref objectRef) (metav1.Object, error) {
	if err := a.authenticate(); err != nil {
		return nil, err
	}
	return a.kubeAPI.GetObjectMeta(ctx, ref)
}

func (a authKube) DeleteObject(ctx context.Context, ref objectRef) error {
	if err := a.authenticate(); err != nil {
		return err
	}
	return a.kubeAPI.DeleteObject(ctx, ref)
}

func (a authKube) ListManaged(ctx context.Context, kind, ns string, limit int64, continueToken string) (*metav1.PartialObjectMetadataList, error) {
	if err := a.authenticate(); err != nil {
		return nil, err
	}
	return a.kubeAPI.ListManaged(ctx, kind, ns, limit, continueToken)
}

func (a authKube) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if err := a.authenticate(); err != nil {
		return nil, err
	}
	return a.kubeAPI.GetNamespace(ctx, name)
}

func (a authKube) ListNamespaces(ctx context.Context, selector string) ([]string, error) {
	if err := a.authenticate(); err != nil {
		return nil, err
	}
	return a.kubeAPI.ListNamespaces(ctx, selector)
}

func (a authKube) GetPod(ctx context.Context, ns, name string) (podTarget, error) {
	if err := a.authenticate(); err != nil {
		return podTarget{}, err
	}
	return a.kubeAPI.GetPod(ctx, ns, name)
}

func (a authKube) ListPods(ctx context.Context, ns, selector string, limit int64) ([]podTarget, error) {
	if err := a.authenticate(); err != nil {
		return nil, err
	}
	return a.kubeAPI.ListPods(ctx, ns, selector, limit)
}

func (a authKube) ServerVersion(ctx context.Context) (string, error) {
	if err := a.authenticate(); err != nil {
		return "", err
	}
	return a.kubeAPI.ServerVersion(ctx)
}

func (a authKube) Allowed(ctx context.Context, attrs authorizationv1.ResourceAttributes) (bool, error) {
	if err := a.authenticate(); err != nil {
		return false, err
	}
	return a.kubeAPI.Allowed(ctx, attrs)
}

// memKey names an object of an inMemory fake.
type memKey struct{ kind, namespace, name string }

// memObjects is an inMemory fake's store: the metadata of each object (all
// the plugin reads back), and per kind the sorted list of the plugin's
// objects, rebuilt after a change.
type memObjects struct {
	mu      sync.Mutex
	objects map[memKey]*metav1.PartialObjectMetadata
	managed map[string][]metav1.PartialObjectMetadata // by kind; absent: stale
}

var managedSelector = labels.SelectorFromSet(labels.Set{managedByLabel: managedByValue})

// kindOf is the kind of an object the fake is seeded with.
func kindOf(obj metav1.Object) string {
	switch obj.(type) {
	case *corev1.Namespace:
		return "Namespace"
	case *corev1.ServiceAccount:
		return kindServiceAccount
	case *corev1.Secret:
		return kindSecret
	}
	panic(fmt.Sprintf("fake: no kind for %T", obj))
}

// put stores obj's metadata, with a new UID unless it has one.
func (m *memObjects) put(kind string, obj metav1.Object) (*metav1.PartialObjectMetadata, error) {
	om := obj.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta).DeepCopy()
	if om.UID == "" {
		om.UID = types.UID(uuid.NewString())
	}
	key := memKey{kind, om.Namespace, om.Name}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[key]; ok {
		return nil, apierrors.NewAlreadyExists(memResource(kind), om.Name)
	}
	stored := &metav1.PartialObjectMetadata{ObjectMeta: *om}
	m.objects[key] = stored
	delete(m.managed, kind)
	return stored, nil
}

// count is the number of objects stored.
func (m *memObjects) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.objects)
}

func (m *memObjects) get(ref objectRef) (*metav1.PartialObjectMetadata, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	obj, ok := m.objects[memKey{ref.Kind, ref.Namespace, ref.Name}]
	if !ok {
		return nil, apierrors.NewNotFound(memResource(ref.Kind), ref.Name)
	}
	return obj, nil
}

// remove deletes ref's object if it still has ref's UID.
func (m *memObjects) remove(ref objectRef) error {
	key := memKey{ref.Kind, ref.Namespace, ref.Name}
	m.mu.Lock()
	defer m.mu.Unlock()
	obj, ok := m.objects[key]
	if !ok {
		return apierrors.NewNotFound(memResource(ref.Kind), ref.Name)
	}
	if obj.UID != ref.UID {
		return uidConflict(memResource(ref.Kind), ref.Name, ref.UID, obj.UID)
	}
	delete(m.objects, key)
	delete(m.managed, ref.Kind)
	return nil
}

// list lists the objects of kind in ns ("" for all) matching selector.
func (m *memObjects) list(kind, ns, selector string) (*metav1.PartialObjectMetadataList, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var items []metav1.PartialObjectMetadata
	if selector == managedBySelector {
		items = m.managedLocked(kind)
		if ns != "" {
			// Sorted by namespace, so ns's objects are one run.
			start := sort.Search(len(items), func(i int) bool { return items[i].Namespace >= ns })
			end := sort.Search(len(items), func(i int) bool { return items[i].Namespace > ns })
			items = items[start:end]
		}
	} else {
		sel, err := labels.Parse(selector)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		for key, obj := range m.objects {
			if key.kind == kind && (ns == "" || key.namespace == ns) && sel.Matches(labels.Set(obj.Labels)) {
				items = append(items, *obj)
			}
		}
		slices.SortFunc(items, compareMeta)
	}
	return &metav1.PartialObjectMetadataList{Items: items}, nil
}

// managedLocked is the sorted list of the plugin's objects of kind, in all
// namespaces; callers must not change it.
func (m *memObjects) managedLocked(kind string) []metav1.PartialObjectMetadata {
	if items, ok := m.managed[kind]; ok {
		return items
	}
	items := []metav1.PartialObjectMetadata{}
	for key, obj := range m.objects {
		if key.kind == kind && managedSelector.Matches(labels.Set(obj.Labels)) {
			items = append(items, *obj)
		}
	}
	slices.SortFunc(items, compareMeta)
	if m.managed == nil {
		m.managed = map[string][]metav1.PartialObjectMetadata{}
	}
	m.managed[kind] = items
	return items
}

func memResource(kind string) schema.GroupResource {
	if k, ok := objectKinds[kind]; ok {
		return schema.GroupResource{Group: k.group, Resource: k.resource}
	}
	return schema.GroupResource{Resource: strings.ToLower(kind) + "s"}
}

// memAPI is the kubeAPI of an inMemory fake: the same answers as
// clientsetAPI over the clientset, straight from the map.
type memAPI struct{ fk *fakeKube }

var _ kubeAPI = memAPI{}

func (m memAPI) resource(kind string) string { return memResource(kind).Resource }

func (m memAPI) CreateObject(_ context.Context, kind string, obj metav1.Object) (objectRef, error) {
	if _, err := lookupKind(kind); err != nil {
		return objectRef{}, err
	}
	if err := m.fk.fault("create", m.resource(kind)); err != nil {
		return objectRef{}, kubeCallError(err)
	}
	stored, err := m.fk.mem.put(kind, obj)
	if err != nil {
		return objectRef{}, kubeCallError(err)
	}
	return refOf(kind, stored), nil
}

func (m memAPI) GetObjectMeta(_ context.Context, ref objectRef) (metav1.Object, error) {
	if _, err := lookupKind(ref.Kind); err != nil {
		return nil, err
	}
	if err := m.fk.fault("get", m.resource(ref.Kind)); err != nil {
		return nil, kubeCallError(err)
	}
	obj, err := m.fk.mem.get(ref)
	if err != nil {
		return nil, kubeCallError(err)
	}
	return obj.DeepCopy(), nil
}

func (m memAPI) DeleteObject(_ context.Context, ref objectRef) error {
	if ref.UID == "" {
		return fmt.Errorf("%s: %w", ref, errNoUID)
	}
	if _, err := lookupKind(ref.Kind); err != nil {
		return err
	}
	if err := m.fk.fault("delete", m.resource(ref.Kind)); err != nil {
		return kubeCallError(err)
	}
	err := m.fk.mem.remove(ref)
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return kubeCallError(err)
}

func (m memAPI) ListManaged(_ context.Context, kind, ns string, limit int64, continueToken string) (*metav1.PartialObjectMetadataList, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("listing %s: a page needs a positive limit", k.resource)
	}
	if err := m.fk.fault("list", k.resource); err != nil {
		return nil, kubeCallError(err)
	}
	m.fk.metadataLists.Add(1)
	list, err := m.fk.mem.list(kind, ns, managedBySelector)
	if err != nil {
		return nil, kubeCallError(err)
	}
	return page(list, limit, continueToken), nil
}

func (m memAPI) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	if err := m.fk.fault("get", "namespaces"); err != nil {
		return nil, kubeCallError(err)
	}
	obj, err := m.fk.mem.get(objectRef{Kind: "Namespace", Name: name})
	if err != nil {
		return nil, kubeCallError(err)
	}
	return &corev1.Namespace{ObjectMeta: *obj.ObjectMeta.DeepCopy()}, nil
}

func (m memAPI) ListNamespaces(_ context.Context, selector string) ([]string, error) {
	sel, err := parseNamespaceSelector(selector)
	if err != nil {
		return nil, err
	}
	if err := m.fk.fault("list", "namespaces"); err != nil {
		return nil, kubeCallError(err)
	}
	list, err := m.fk.mem.list("Namespace", "", sel.String())
	if err != nil {
		return nil, kubeCallError(err)
	}
	names := make([]string, 0, len(list.Items))
	for _, ns := range list.Items {
		names = append(names, ns.Name)
	}
	return names, nil
}

// GetPod and ListPods: an inMemory fake keeps metadata only and serves
// benchmarks, which issue no target-scoped credential: it holds no pods.
func (m memAPI) GetPod(_ context.Context, _, name string) (podTarget, error) {
	if err := m.fk.fault("get", "pods"); err != nil {
		return podTarget{}, kubeCallError(err)
	}
	return podTarget{}, kubeCallError(apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name))
}

func (m memAPI) ListPods(_ context.Context, _, _ string, limit int64) ([]podTarget, error) {
	if limit <= 0 {
		return nil, errors.New("listing pods: a page needs a positive limit")
	}
	if err := m.fk.fault("list", "pods"); err != nil {
		return nil, kubeCallError(err)
	}
	return nil, nil
}

func (m memAPI) CreateToken(_ context.Context, ns, sa string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	out, err := m.fk.mintToken(ns, sa, tr)
	return out, kubeCallError(err)
}

func (m memAPI) WhoAmI(context.Context) (string, error) { return testRequesterUser, nil }

func (m memAPI) ServerVersion(context.Context) (string, error) { return "v1.37.2", nil }

func (m memAPI) Allowed(_ context.Context, attrs authorizationv1.ResourceAttributes) (bool, error) {
	return m.fk.allowed(attrs), nil
}
