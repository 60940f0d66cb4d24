package backend

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/google/uuid"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// memKube is a minimal in-memory kubeAPI, so benchmarks measure the plugin's
// own work rather than client-go's fake object tracker (whose per-create REST
// mapper costs more than everything the plugin does).
type memKube struct {
	mu      sync.Mutex
	objects map[string]types.UID
}

func (m *memKube) CreateObject(_ context.Context, kind string, obj metav1.Object) (objectRef, error) {
	ref := objectRef{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: types.UID(uuid.NewString())}
	m.mu.Lock()
	m.objects[ref.Kind+"/"+ref.Namespace+"/"+ref.Name] = ref.UID
	m.mu.Unlock()
	return ref, nil
}

func (m *memKube) GetObjectMeta(context.Context, objectRef) (metav1.Object, error) {
	return nil, errors.New("not used by the issue path")
}

func (m *memKube) DeleteObject(_ context.Context, ref objectRef) error {
	m.mu.Lock()
	delete(m.objects, ref.Kind+"/"+ref.Namespace+"/"+ref.Name)
	m.mu.Unlock()
	return nil
}

func (m *memKube) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, nil
}

func (m *memKube) ListNamespaces(context.Context, string) ([]string, error) { return nil, nil }

func (m *memKube) ListManaged(context.Context, string, string, int64, string) (*metav1.PartialObjectMetadataList, error) {
	return &metav1.PartialObjectMetadataList{}, nil
}

func (m *memKube) CreateToken(_ context.Context, ns, sa string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	exp := time.Now().Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second)
	out := tr.DeepCopy()
	out.Status.ExpirationTimestamp = metav1.NewTime(exp)
	out.Status.Token = fakeJWT(map[string]interface{}{"jti": uuid.NewString(), "exp": exp.Unix(), "sub": "system:serviceaccount:" + ns + ":" + sa})
	return out, nil
}

func (m *memKube) WhoAmI(context.Context) (string, error) {
	return "system:serviceaccount:vault-plugin-scanner:vault-plugin-scanner", nil
}

func (m *memKube) ServerVersion(context.Context) (string, error) { return "v1.37.2", nil }

// Allowed grants everything but tokens for unnamed service accounts, as
// deploy/ does.
func (m *memKube) Allowed(_ context.Context, attrs authorizationv1.ResourceAttributes) (bool, error) {
	return !isAnyTokenReview(&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}), nil
}

// BenchmarkIssue measures the plugin's own cost of one credential plus its
// revoke: request parsing, WAL, bound Secret, TokenRequest, kubeconfig and
// lease response.
// BenchmarkIssue logs as the plugin does under Vault at level info (JSON
// lines), into io.Discard so the figures stay readable.
func BenchmarkIssue(b *testing.B) {
	be, s, _ := newTestBackendLogging(b, hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Info, JSONFormat: true}))
	mem := &memKube{objects: map[string]types.UID{}}
	be.newKubeAPI = func(*rest.Config) (kubeAPI, error) { return mem, nil }
	configureCluster(b, be, s)
	configureRole(b, be, s, nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := be.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "creds/" + testRole, Storage: s})
		if err != nil || resp.IsError() {
			b.Fatal(err, resp.Error())
		}
		if _, err := be.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
			b.Fatal(err)
		}
	}
	if len(mem.objects) != 0 {
		b.Fatalf("%d objects left after revoking every lease", len(mem.objects))
	}
}

func BenchmarkBuildKubeconfig(b *testing.B) {
	params := kubeconfigParams{
		ClusterName: "cluster-a", Server: testHost, CACert: testCAPEM(b),
		UserName: testSA, Token: testRequesterJWT, Namespace: testNamespace,
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := buildKubeconfig(params); err != nil {
			b.Fatal(err)
		}
	}
}
