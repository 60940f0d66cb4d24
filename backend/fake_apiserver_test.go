package backend

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
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

// The unit tests' one Kubernetes API server on the wire, for what only the
// real client shows: TLS, redirects, proxies, HTTP status codes, client-go's
// retries and timeouts. Everything above the wire is fake_kube_test.go's.

// apiServer is an httptest TLS Kubernetes API answering the plugin's calls
// (version, Secret create and delete, TokenRequest, self reviews), with
// knobs for the odd answers real servers give under stress. It records the
// Authorization header of every request, so a test can tell where a
// credential went. Its certificate is its own CA's (caPEM), as an
// attacker's endpoint would have.
type apiServer struct {
	*httptest.Server
	caPEM string
	// proxy, when started (withConnectProxy), is an HTTP proxy that sends
	// every CONNECT to the server.
	proxy *httptest.Server

	mu             sync.Mutex
	seen           []string          // Authorization of every request
	secrets        map[string]string // name -> uid
	created        []corev1.Secret   // every Secret created, as received
	deletes        int
	secretStatus   *apierrors.StatusError // answer to Secret create when set
	tokenStatus    *apierrors.StatusError // answer to TokenRequest when set
	deleteStatus   *apierrors.StatusError // answer to Secret delete when set
	tokenHang      time.Duration          // TokenRequest sleeps this long first
	tokenTooMany   int                    // answer this many TokenRequests with 429 + Retry-After: 1
	versionTooMany int                    // answer this many version requests with 429 + Retry-After: 0
	redirectTo     string                 // when set, answer everything with a redirect there
	tokenRequests  int
	versionCalls   int
}

// apiServerOption sets up what one test needs of the server.
type apiServerOption func(t *testing.T, a *apiServer)

// withConnectProxy starts a.proxy: what someone who may write clusters/
// would set as proxy_url to reach their own endpoint.
func withConnectProxy() apiServerOption {
	return func(t *testing.T, a *apiServer) { a.proxy = connectProxy(t, a.Listener.Addr().String()) }
}

// redirecting answers every request with a 307 to target.
func redirecting(target string) apiServerOption {
	return func(_ *testing.T, a *apiServer) { a.redirectTo = target }
}

func newAPIServer(t *testing.T, opts ...apiServerOption) *apiServer {
	t.Helper()
	a := &apiServer{secrets: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", a.version)
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
	a.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Header.Get("Authorization"))
		redirect := a.redirectTo
		a.mu.Unlock()
		if redirect != "" {
			http.Redirect(w, r, redirect+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(a.Close)
	a.caPEM = string(tlsServerCA(a.Server))
	for _, opt := range opts {
		opt(t, a)
	}
	return a
}

// tlsServerCA returns the PEM of the certificate an httptest TLS server uses.
func tlsServerCA(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// connectProxy is an HTTP proxy that sends every CONNECT to target.
func connectProxy(t *testing.T, target string) *httptest.Server {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		upstream, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			upstream.Close()
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { _, _ = io.Copy(upstream, conn); upstream.Close() }()
		go func() { _, _ = io.Copy(conn, upstream); conn.Close() }()
	}))
	t.Cleanup(proxy.Close)
	return proxy
}

// authorizations are the Authorization headers of the requests so far.
func (a *apiServer) authorizations() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// version answers GET /version.
func (a *apiServer) version(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	a.versionCalls++
	tooMany := a.versionTooMany > 0
	if tooMany {
		a.versionTooMany--
	}
	a.mu.Unlock()
	if tooMany {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"major": "1", "minor": "37", "gitVersion": "v1.37.2"})
}

// calls are the version requests and TokenRequests answered so far.
func (a *apiServer) calls() (version, token int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.versionCalls, a.tokenRequests
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
	a.created = append(a.created, s)
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

// createdSecrets are the Secrets created so far, as the plugin sent them.
func (a *apiServer) createdSecrets() []corev1.Secret {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]corev1.Secret(nil), a.created...)
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
