package backend

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/google/uuid"
	"github.com/hashicorp/vault/sdk/logical"
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

const (
	testCluster   = "cluster-a"
	testRole      = "cluster-a"
	testSA        = "scanner-sa"
	testNamespace = "scanner-namespace"
	testHost      = "https://127.0.0.1:6443"
	// testRequesterJWT is the plugin's own credential in tests; no output may contain it.
	testRequesterJWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXF1ZXN0ZXIifQ.c2lnbmF0dXJlLXJlcXVlc3Rlcg"
	// testRequesterUser is whom testRequesterJWT authenticates as.
	testRequesterUser = "requester"
)

// fakeKube imitates the parts of the API server the plugin uses: Secrets get
// UIDs, deletes honour UID preconditions, and TokenRequest checks the service
// account, the bound Secret and the 10-minute minimum like the real one.
type fakeKube struct {
	clientset *fake.Clientset
	// metadataLists counts the pages served by the metadata-only client.
	metadataLists atomic.Int32

	mu        sync.Mutex
	issued    []authenticationv1.TokenRequest // requests as received
	tokenErr  error                           // returned by TokenRequest when set
	maxExpiry time.Duration                   // imitates --service-account-max-token-expiration
	noJTI     bool

	built      atomic.Int32 // clients built by the backend's factory
	lastConfig atomic.Pointer[rest.Config]
}

func newFakeKube(t testing.TB) *fakeKube {
	t.Helper()
	fk := &fakeKube{clientset: fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: testSA, Namespace: testNamespace, UID: "sa-uid"}},
	)}
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
			return true, nil, apierrors.NewConflict(del.Resource.GroupResource(), del.Name, fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", *pre.UID, uid))
		}
		return false, nil, nil
	})
	fk.clientset.PrependReactor("create", "serviceaccounts", fk.tokenRequestReactor)
	// The plugin's credential (testRequesterJWT, whose claims name no
	// service account) authenticates as its subject.
	fk.clientset.PrependReactor("create", "selfsubjectreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		review := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.SelfSubjectReview).DeepCopy()
		review.Status.UserInfo.Username = testRequesterUser
		return true, review, nil
	})
	// The plugin's credential may do everything unless a test says
	// otherwise, except mint tokens for service accounts it was not granted
	// by name: deploy/ lists them with resourceNames.
	fk.clientset.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		review := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		review.Status.Allowed = !isAnyTokenReview(review)
		return true, review, nil
	})
	return fk
}

// isAnyTokenReview tells the review the plugin sends to learn whether it
// may mint a token for any service account, which deploy/ never grants for
// the namespaces of existing-account roles.
func isAnyTokenReview(review *authorizationv1.SelfSubjectAccessReview) bool {
	attrs := review.Spec.ResourceAttributes
	return attrs != nil && attrs.Resource == "serviceaccounts" && attrs.Subresource == "token" && attrs.Name == ""
}

// api is the kubeAPI the backend's factory returns for fk.
func (fk *fakeKube) api() clientsetAPI {
	return clientsetAPI{clientset: fk.clientset, metadata: fakeMetadata{fk: fk}}
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
	// Pages in a stable order; the continue token is the last key served.
	key := func(m *metav1.PartialObjectMetadata) string { return m.Namespace + "/" + m.Name }
	slices.SortFunc(out.Items, func(a, b metav1.PartialObjectMetadata) int { return strings.Compare(key(&a), key(&b)) })
	if opts.Continue != "" {
		start, _ := slices.BinarySearchFunc(out.Items, opts.Continue, func(m metav1.PartialObjectMetadata, k string) int { return strings.Compare(key(&m), k) })
		for start < len(out.Items) && key(&out.Items[start]) <= opts.Continue {
			start++
		}
		out.Items = out.Items[start:]
	}
	if opts.Limit > 0 && int64(len(out.Items)) > opts.Limit {
		out.Items = out.Items[:opts.Limit]
		out.Continue = key(&out.Items[len(out.Items)-1])
	}
	return out, nil
}

func (fk *fakeKube) tokenRequestReactor(action k8stesting.Action) (bool, runtime.Object, error) {
	create := action.(k8stesting.CreateAction)
	if create.GetSubresource() != "token" {
		return false, nil, nil
	}
	tr := create.GetObject().(*authenticationv1.TokenRequest)
	fk.mu.Lock()
	fk.issued = append(fk.issued, *tr.DeepCopy())
	tokenErr, maxExpiry, noJTI := fk.tokenErr, fk.maxExpiry, fk.noJTI
	fk.mu.Unlock()
	if tokenErr != nil {
		return true, nil, tokenErr
	}
	ns, saName := create.GetNamespace(), action.(k8stesting.CreateActionImpl).Name
	if _, err := fk.clientset.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, ns, saName); err != nil {
		return true, nil, err
	}
	if secs := tr.Spec.ExpirationSeconds; secs == nil || *secs < 600 {
		return true, nil, apierrors.NewInvalid(schema.GroupKind{Group: "authentication.k8s.io", Kind: "TokenRequest"}, saName, nil)
	}
	ref := tr.Spec.BoundObjectRef
	if ref != nil {
		if ref.Kind != "Secret" {
			return true, nil, fmt.Errorf("the plugin binds tokens only to Secrets, got %s", ref.Kind)
		}
		obj, err := fk.clientset.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, ns, ref.Name)
		if err != nil {
			return true, nil, err
		}
		if obj.(*corev1.Secret).UID != ref.UID {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, ref.Name, fmt.Errorf("the UID in the bound object reference does not match"))
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
	return true, out, nil
}

func (fk *fakeKube) setTokenErr(err error) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.tokenErr = err
}

func (fk *fakeKube) tokenRequests() []authenticationv1.TokenRequest {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return append([]authenticationv1.TokenRequest(nil), fk.issued...)
}

// listManaged lists the metadata of the objects of kind labelled as the
// plugin's in ns ("" for all), in one page.
func (fk *fakeKube) listManaged(kind, ns string) ([]metav1.Object, error) {
	return fk.listMeta(kind, ns, managedBySelector)
}

// listMeta lists the metadata of the objects of kind in ns matching
// selector, in one page, straight from the fake.
func (fk *fakeKube) listMeta(kind, ns, selector string) ([]metav1.Object, error) {
	list, err := fakeMetadata{fk: fk, resource: objectKinds[kind].resourceVersion(), namespace: ns}.List(context.Background(), metav1.ListOptions{LabelSelector: selector})
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
	list, err := fk.clientset.CoreV1().Secrets("").List(context.Background(), metav1.ListOptions{LabelSelector: managedBySelector})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func fakeJWT(claims map[string]interface{}) string {
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"test"}`)) + "." + enc(payload) + "." + enc([]byte("signature"))
}

// newTestBackend returns a configured backend whose clients talk to fk.
func newTestBackend(t testing.TB) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	return newTestBackendLogging(t, nil)
}

// newTestBackendLogging is newTestBackend with the given logger (nil: the
// SDK's test logger, trace level to stderr).
func newTestBackendLogging(t testing.TB, logger hclog.Logger) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	fk := newFakeKube(t)
	config := logical.TestBackendConfig()
	if logger != nil {
		config.Logger = logger
	}
	config.StorageView = &logical.InmemStorage{}
	config.System = &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
	b := newBackend("v0.0.0-test")
	b.newKubeAPI = func(cfg *rest.Config) (kubeAPI, error) {
		fk.built.Add(1)
		fk.lastConfig.Store(cfg)
		return fk.api(), nil
	}
	if err := b.Setup(context.Background(), config); err != nil {
		t.Fatal(err)
	}
	return b, config.StorageView, fk
}

// request runs one request through the framework like Vault would.
func request(t testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	t.Helper()
	req := &logical.Request{Operation: op, Path: path, Storage: s, Data: data, ID: uuid.NewString()}
	return b.HandleRequest(context.Background(), req)
}

// mustOK fails the test unless the request succeeded without an error response.
func mustOK(t testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) *logical.Response {
	t.Helper()
	resp, err := request(t, b, s, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: %v", op, path, err)
	}
	if resp != nil && resp.IsError() {
		t.Fatalf("%s %s: error response: %v", op, path, resp.Error())
	}
	return resp
}

// mustBadRequest fails the test unless the request got a 400 whose message
// contains want.
func mustBadRequest(t testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}, want string) {
	t.Helper()
	resp, err := request(t, b, s, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: want a 400, got internal error %v", op, path, err)
	}
	if resp == nil || !resp.IsError() {
		t.Fatalf("%s %s: want a 400, got %#v", op, path, resp)
	}
	msg := resp.Error().Error()
	if !containsFold(msg, want) {
		t.Fatalf("%s %s: error %q does not mention %q", op, path, msg, want)
	}
}

func configureCluster(t testing.TB, b *backend, s logical.Storage) {
	t.Helper()
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host":     testHost,
		"kubernetes_ca_cert":  testCAPEM(t),
		"service_account_jwt": testRequesterJWT,
	})
}

func configureRole(t testing.TB, b *backend, s logical.Storage, extra map[string]interface{}) {
	t.Helper()
	data := map[string]interface{}{
		"cluster":                   testCluster,
		"service_account_name":      testSA,
		"service_account_namespace": testNamespace,
	}
	for k, v := range extra {
		data[k] = v
	}
	mustOK(t, b, s, logical.CreateOperation, "roles/"+testRole, data)
}

// newConfiguredBackend has cluster-a and role cluster-a written.
func newConfiguredBackend(t testing.TB) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	b, s, fk := newTestBackend(t)
	configureCluster(t, b, s)
	configureRole(t, b, s, nil)
	return b, s, fk
}

var (
	testCAOnce sync.Once
	testCA     string
	testKeyPEM string
)

// testCAPEM is a self-signed CA certificate; testPrivateKeyPEM its key.
func testCAPEM(t testing.TB) string {
	t.Helper()
	testCAOnce.Do(func() {
		var err error
		if testCA, testKeyPEM, err = newTestCA("test-ca"); err != nil {
			panic(err)
		}
	})
	return testCA
}

// otherCAPEM is a CA certificate other than testCAPEM's, as an attacker's.
func otherCAPEM(t testing.TB) string {
	t.Helper()
	ca, _, err := newTestCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newTestCA makes a self-signed CA certificate and its key, both PEM.
func newTestCA(commonName string) (caPEM, keyPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: commonName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})), nil
}

func testPrivateKeyPEM(t testing.TB) string {
	testCAPEM(t)
	return testKeyPEM
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// testLeaseMeta is the metadata of a lease of testRole issued now.
func testLeaseMeta(issueID string) leaseMeta {
	return leaseMeta{
		roleName: testRole, issueID: issueID, expiresAt: time.Now(),
		role: &roleEntry{Cluster: testCluster, ServiceAccountName: testSA, ServiceAccountNamespace: testNamespace},
	}
}

func names(secrets []corev1.Secret) []string {
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		out = append(out, s.Name)
	}
	return out
}

// assertNoSecretIn fails if text contains the token or the plugin's own JWT.
func assertNoSecretIn(t testing.TB, text, token string) {
	t.Helper()
	for _, secret := range []string{token, testRequesterJWT} {
		if secret != "" && strings.Contains(text, secret) {
			t.Errorf("a credential leaked into %q", text)
		}
	}
}

var errTokenRequestFailed = apierrors.NewInternalError(errors.New("etcdserver: request timed out"))

// failSecretDeletes makes Secret deletes answer 503 while the returned flag
// is set (it starts set).
func failSecretDeletes(fk *fakeKube) *atomic.Bool {
	failing := &atomic.Bool{}
	failing.Store(true)
	fk.clientset.PrependReactor("delete", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failing.Load() {
			return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
		}
		return false, nil, nil
	})
	return failing
}
