package backend

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
)

// apiServer is an httptest Kubernetes API answering the plugin's three calls,
// with knobs for the odd answers real servers give under stress.
type apiServer struct {
	*httptest.Server

	mu            sync.Mutex
	secrets       map[string]string // name -> uid
	deletes       int
	secretStatus  *apierrors.StatusError // answer to Secret create when set
	tokenStatus   *apierrors.StatusError // answer to TokenRequest when set
	deleteStatus  *apierrors.StatusError // answer to Secret delete when set
	tokenHang     time.Duration          // TokenRequest sleeps this long first
	tokenTooMany  int                    // answer this many TokenRequests with 429 + Retry-After
	tokenRequests int
}

func newAPIServer(t *testing.T) *apiServer {
	t.Helper()
	a := &apiServer{secrets: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/namespaces/{ns}/secrets", a.createSecret)
	mux.HandleFunc("DELETE /api/v1/namespaces/{ns}/secrets/{name}", a.deleteSecret)
	mux.HandleFunc("POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", a.createToken)
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews", func(w http.ResponseWriter, r *http.Request) {
		var review authorizationv1.SelfSubjectAccessReview
		if err := decodeBody(r, &review); err != nil {
			writeStatus(w, apierrors.NewBadRequest(err.Error()))
			return
		}
		review.Status.Allowed = !isAnyTokenReview(&review)
		review.Kind, review.APIVersion = "SelfSubjectAccessReview", "authorization.k8s.io/v1"
		writeJSON(w, http.StatusCreated, review)
	})
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/selfsubjectreviews", func(w http.ResponseWriter, r *http.Request) {
		review := authenticationv1.SelfSubjectReview{}
		review.Kind, review.APIVersion = "SelfSubjectReview", "authentication.k8s.io/v1"
		review.Status.UserInfo.Username = testRequesterUser
		writeJSON(w, http.StatusCreated, review)
	})
	a.Server = httptest.NewTLSServer(mux)
	t.Cleanup(a.Close)
	return a
}

func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(err.ErrStatus.Code))
	status := err.ErrStatus
	status.Kind, status.APIVersion = "Status", "v1"
	_ = json.NewEncoder(w).Encode(status)
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *apiServer) createSecret(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.secretStatus != nil {
		writeStatus(w, a.secretStatus)
		return
	}
	var s corev1.Secret
	if err := decodeBody(r, &s); err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	s.UID = types.UID("uid-" + s.Name)
	s.Kind, s.APIVersion = "Secret", "v1"
	a.secrets[s.Name] = string(s.UID)
	writeJSON(w, http.StatusCreated, s)
}

func (a *apiServer) deleteSecret(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.deleteStatus != nil {
		writeStatus(w, a.deleteStatus)
		return
	}
	name := r.PathValue("name")
	if _, ok := a.secrets[name]; !ok {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name))
		return
	}
	delete(a.secrets, name)
	a.deletes++
	writeJSON(w, http.StatusOK, metav1.Status{Status: metav1.StatusSuccess})
}

func (a *apiServer) createToken(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.tokenRequests++
	hang, status := a.tokenHang, a.tokenStatus
	tooMany := a.tokenTooMany > 0
	if tooMany {
		a.tokenTooMany--
	}
	a.mu.Unlock()
	if hang > 0 {
		select {
		case <-time.After(hang):
		case <-r.Context().Done():
			return
		}
	}
	if tooMany {
		w.Header().Set("Retry-After", "1")
		writeStatus(w, apierrors.NewTooManyRequests("too many requests", 1))
		return
	}
	if status != nil {
		writeStatus(w, status)
		return
	}
	var tr authenticationv1.TokenRequest
	if err := decodeBody(r, &tr); err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	exp := time.Now().Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second)
	tr.Status.Token = fakeJWT(map[string]interface{}{"jti": uuid.NewString(), "exp": exp.Unix()})
	tr.Status.ExpirationTimestamp = metav1.NewTime(exp)
	tr.Kind, tr.APIVersion = "TokenRequest", "authentication.k8s.io/v1"
	writeJSON(w, http.StatusCreated, tr)
}

// decodeBody reads a request body in whatever encoding client-go chose
// (protobuf for built-in types, or JSON).
func decodeBody(r *http.Request, into runtime.Object) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	_, _, err = scheme.Codecs.UniversalDeserializer().Decode(body, nil, into)
	return err
}

func (a *apiServer) state() (secrets, deletes int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.secrets), a.deletes
}

// newBackendFor returns a backend whose cluster-a is host, with the real
// client and a short request timeout.
func newBackendFor(t *testing.T, host, ca string) (*backend, logical.Storage) {
	t.Helper()
	b, s, _ := newTestBackend(t)
	b.newKubeAPI = newClientsetAPI
	b.requestTimeout = time.Second
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host": host, "kubernetes_ca_cert": ca, "service_account_jwt": testRequesterJWT,
	})
	configureRole(t, b, s, nil)
	return b, s
}

func TestIssueFaults(t *testing.T) {
	internal := apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts/token"}, testSA, errors.New("RBAC: access denied"))
	cases := []struct {
		name        string
		setup       func(*apiServer)
		wantErr     string // empty: the issue succeeds
		wantDeletes int    // Secrets deleted by the failed issue's cleanup
		// wantWAL: entries left for rollback (a create whose outcome is
		// unknown, which this server cannot look up).
		wantWAL int
		timeout time.Duration
	}{
		{name: "Secret create answers 500", setup: func(a *apiServer) { a.secretStatus = internal }, wantErr: "creating Secret", wantWAL: 1},
		{name: "Secret create forbidden", setup: func(a *apiServer) {
			a.secretStatus = apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("RBAC: access denied"))
		}, wantErr: "creating Secret"},
		{name: "TokenRequest answers 500", setup: func(a *apiServer) { a.tokenStatus = internal }, wantErr: "request timed out", wantDeletes: 1},
		{name: "TokenRequest forbidden", setup: func(a *apiServer) { a.tokenStatus = forbidden }, wantErr: "forbidden", wantDeletes: 1},
		{name: "TokenRequest hangs past the timeout", setup: func(a *apiServer) { a.tokenHang = 2 * time.Second }, wantErr: "requesting a token", wantDeletes: 1},
		// Retry-After is 1 s: the request timeout must cover both waits.
		{name: "TokenRequest answers 429 with Retry-After twice", setup: func(a *apiServer) { a.tokenTooMany = 2 }, timeout: 5 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api := newAPIServer(t)
			tc.setup(api)
			b, s := newBackendFor(t, api.URL, string(tlsServerCA(api.Server)))
			if tc.timeout > 0 {
				b.requestTimeout = tc.timeout
			}
			started := time.Now()
			resp, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
			t.Logf("answered in %s", time.Since(started).Round(time.Millisecond))
			secrets, deletes := api.state()
			if tc.wantErr == "" {
				if err != nil || resp.IsError() {
					t.Fatalf("issue failed: %v %v", err, resp)
				}
				api.mu.Lock()
				calls := api.tokenRequests
				api.mu.Unlock()
				if secrets != 1 || calls != 3 {
					t.Errorf("Secrets = %d, TokenRequests = %d; want 1 and 3 (two retried 429s)", secrets, calls)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.wantErr)
			}
			assertNoSecretIn(t, err.Error(), "")
			if secrets != 0 || deletes != tc.wantDeletes {
				t.Errorf("after the failure: %d Secrets left, %d deleted; want 0 left, %d deleted", secrets, deletes, tc.wantDeletes)
			}
			if wals := walEntries(t, s); len(wals) != tc.wantWAL {
				t.Errorf("WAL entries left: %d, want %d", len(wals), tc.wantWAL)
			}
		})
	}
}

func TestIssueWithAPIServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens here now
	b, s := newBackendFor(t, "https://"+addr, testCAPEM(t))
	_, err = request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error = %v, want connection refused", err)
	}
	if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 0 {
		t.Errorf("WAL entries left: %d", len(wals))
	}
}

// A revoke while the API server fails is an error, so Vault retries it; once
// the server answers again, the same revoke succeeds.
func TestRevokeRetriedUntilAPIServerAnswers(t *testing.T) {
	api := newAPIServer(t)
	b, s := newBackendFor(t, api.URL, string(tlsServerCA(api.Server)))
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)

	api.mu.Lock()
	api.deleteStatus = apierrors.NewServiceUnavailable("the server is shutting down")
	api.mu.Unlock()
	_, err := b.HandleRequest(context.Background(), revokeRequest(s, resp))
	if err == nil {
		t.Fatal("revoke reported success while the Secret could not be deleted")
	}
	assertNoSecretIn(t, err.Error(), resp.Data["service_account_token"].(string))

	api.mu.Lock()
	api.deleteStatus = nil
	api.mu.Unlock()
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
		t.Fatalf("retried revoke: %v", err)
	}
	if secrets, deletes := api.state(); secrets != 0 || deletes != 1 {
		t.Errorf("after the retried revoke: %d Secrets, %d deletes", secrets, deletes)
	}
}
