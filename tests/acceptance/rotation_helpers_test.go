package acceptance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// tokenRecorder is a TLS reverse proxy in front of the stack's API server
// that remembers, by credential id, the bearer tokens the plugin sends. The
// plugin never returns its own credential, so this is how a test gets hold
// of a rotated token to show it is rejected once replaced. It lives in the
// test process only.
type tokenRecorder struct {
	URL    string
	CAFile string

	mu       sync.Mutex
	tokens   map[string]string // credential id -> token
	requests []sentRequest
}

type sentRequest struct {
	Method, Path, CredentialID string
}

func newTokenRecorder(t *testing.T) *tokenRecorder {
	t.Helper()
	return newTokenRecorderFor(t, st.Kube)
}

// newTokenRecorderFor is a tokenRecorder in front of kube.
func newTokenRecorderFor(t *testing.T, kube *stack.KubeAPIServer) *tokenRecorder {
	t.Helper()
	target, err := url.Parse(kube.URL)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(kube.PKI.CAPEM)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	r := &tokenRecorder{tokens: map[string]string{}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
			id := credentialIDOf(tok)
			r.mu.Lock()
			r.tokens[id] = tok
			r.requests = append(r.requests, sentRequest{Method: req.Method, Path: req.URL.Path, CredentialID: id})
			r.mu.Unlock()
		}
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	r.CAFile = filepath.Join(t.TempDir(), "recorder-ca.crt")
	if err := stack.WriteFile0600(r.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})); err != nil {
		t.Fatal(err)
	}
	return r
}

// token returns the token the plugin sent with credential id, or "".
func (r *tokenRecorder) token(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokens[id]
}

// tokenRequestsFor lists the credential ids of the TokenRequests the plugin
// sent for a service account, in order.
func (r *tokenRecorder) tokenRequestsFor(namespace, sa string) []string {
	path := "/api/v1/namespaces/" + namespace + "/serviceaccounts/" + sa + "/token"
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.requests {
		if q.Method == http.MethodPost && q.Path == path {
			out = append(out, q.CredentialID)
		}
	}
	return out
}

func credentialIDOf(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	var claims struct {
		JTI string `json:"jti"`
	}
	if b, err := decodeSegment(parts[1]); err == nil && json.Unmarshal(b, &claims) == nil && claims.JTI != "" {
		return "JTI=" + claims.JTI
	}
	return ""
}

// rotationCluster writes clusters/<name> reaching the API server through
// rec, with a fresh bootstrap token of 10 minutes and the extra fields, and
// a role of the same name for scanner-sa. Cleanup deletes both and the
// rotation Secrets they left (the current one outlives its cluster entry).
func rotationCluster(t *testing.T, rec *tokenRecorder, name string, extra ...string) (bootstrap string) {
	t.Helper()
	t.Cleanup(func() {
		for _, p := range []string{"roles/" + name, "clusters/" + name} {
			vaultCLI(t, "delete", stack.Mount+"/"+p)
		}
		ctx := testCtx(t, time.Minute)
		cs, err := st.Kube.AdminClient()
		if err != nil {
			return
		}
		list, err := cs.CoreV1().Secrets(stack.RequesterNamespace).List(ctx, metav1.ListOptions{LabelSelector: stack.ManagedByLabel})
		if err != nil {
			return
		}
		for _, s := range list.Items {
			if s.Annotations["vault-plugin-scanner/cluster"] == name {
				_ = cs.CoreV1().Secrets(stack.RequesterNamespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
			}
		}
	})
	res, err := st.KubectlAdmin(testCtx(t, time.Minute), "create", "token", stack.RequesterSA, "-n", stack.RequesterNamespace, "--duration=10m")
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl create token: %v %s", err, res)
	}
	bootstrap = strings.TrimSpace(res.Stdout)
	mustVault(t, append([]string{"write", stack.Mount + "/clusters/" + name,
		"kubernetes_host=" + rec.URL,
		"kubernetes_ca_cert=@" + rec.CAFile,
		"kubeconfig_host=" + st.Kube.URL,
		"kubeconfig_ca_cert=@" + st.Kube.PKI.CAFile,
		"service_account_jwt=" + bootstrap}, extra...)...)
	mustVault(t, "write", stack.Mount+"/roles/"+name, "cluster="+name,
		"service_account_name="+stack.ScannerSA, "service_account_namespace="+stack.ScannerNamespace, "ttl=15m")
	return bootstrap
}

// vaultJSON runs a vault command with -format=json and decodes its output,
// failing the test if it holds a JWT.
func vaultJSON(t *testing.T, args ...string) (data map[string]any, warnings []string) {
	t.Helper()
	res := mustVault(t, append([]string{args[0], "-format=json"}, args[1:]...)...)
	if strings.Contains(res.Stdout, "eyJhbGciOi") {
		t.Fatalf("vault %s answered with a JWT", strings.Join(args, " "))
	}
	var out struct {
		Data     map[string]any `json:"data"`
		Warnings []string       `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, res.Stdout)
	}
	return out.Data, out.Warnings
}

// requesterStatus is the HTTP status the API server gives token on a
// request the token requester may not make: 403 while the token
// authenticates, 401 once it is rejected.
func requesterStatus(t *testing.T, token string) int {
	t.Helper()
	code, _, err := st.Kube.Get(testCtx(t, 30*time.Second), "/api/v1/namespaces/"+stack.RequesterNamespace+"/pods", token)
	if err != nil {
		t.Fatalf("GET with a requester token: %v", err)
	}
	return code
}

// waitRequesterRejected polls until the API server answers 401 to token.
func waitRequesterRejected(t *testing.T, token string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	last := 0
	_, err := stack.Poll(testCtx(t, timeout+30*time.Second), timeout, 500*time.Millisecond, func() (bool, error) {
		last = requesterStatus(t, token)
		return last == http.StatusUnauthorized, nil
	})
	if err != nil {
		t.Fatalf("token not rejected within %s (last HTTP %d): %v", timeout, last, err)
	}
	return time.Since(start)
}

// waitSecretGone polls until the Secret "namespace/name" no longer exists.
func waitSecretGone(t *testing.T, nsName string, timeout time.Duration) time.Duration {
	t.Helper()
	ns, name, _ := strings.Cut(nsName, "/")
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx := testCtx(t, timeout+30*time.Second)
	_, err = stack.Poll(ctx, timeout, 500*time.Millisecond, func() (bool, error) {
		_, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		return err != nil && strings.Contains(err.Error(), "not found"), nil
	})
	if err != nil {
		t.Fatalf("Secret %s still there after %s: %v", nsName, timeout, err)
	}
	return time.Since(start)
}

// auditTokenRequest reports whether the kube-apiserver audit log holds a
// successful TokenRequest for namespace/sa made with credentialID, and the
// credential id of the request that issued credentialID (its TokenRequest).
func auditTokenRequest(t *testing.T, credentialID, namespace, sa string) (usedForSA bool, issuedBy string) {
	t.Helper()
	_, _ = stack.Poll(testCtx(t, time.Minute), 20*time.Second, 500*time.Millisecond, func() (bool, error) {
		for _, ev := range readJSONLines[kubeAuditEvent](t, st.Kube.AuditLogPath) {
			ids := ev.User.Extra["authentication.kubernetes.io/credential-id"]
			if len(ids) == 1 && ids[0] == credentialID && ev.ObjectRef.Resource == "serviceaccounts" && ev.ObjectRef.Subresource == "token" &&
				ev.ObjectRef.Namespace == namespace && ev.ObjectRef.Name == sa && ev.ResponseStatus.Code == http.StatusCreated {
				usedForSA = true
			}
			if ev.Annotations["authentication.kubernetes.io/issued-credential-id"] == credentialID && len(ids) == 1 {
				issuedBy = ids[0]
			}
		}
		return usedForSA && issuedBy != "", nil
	})
	return usedForSA, issuedBy
}

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

// haRotateThenIssue rotates cluster-ha's credential through the active node
// and at once issues a credential of role through standby: the standby's
// request is served with the new credential (kube-apiserver audit). The
// lease is revoked before returning, so the HA test's counts stay as they
// were.
func haRotateThenIssue(t *testing.T, ctx context.Context, h *stack.VaultHA, active, standby *stack.HANode, role string) {
	t.Helper()
	res, err := active.CLI(ctx, "write", "-format=json", "-f", stack.Mount+"/clusters/"+stack.HACluster+"/rotate-root")
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("rotate-root through %s: %v %s", active.NodeID, err, res)
	}
	var out struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil || strings.Contains(res.Stdout, "eyJhbGciOi") {
		t.Fatalf("rotate-root answered %v (or carried a JWT)", err)
	}
	rotatedAt := time.Now()
	id := str(out.Data["credential_id"])
	t.Cleanup(func() {
		ns, name, _ := strings.Cut(str(out.Data["bound_secret"]), "/")
		if cs, err := st.Kube.AdminClient(); err == nil {
			_ = cs.CoreV1().Secrets(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
	c := haReadCreds(t, ctx, h, standby, role)
	issued := time.Since(rotatedAt)
	if code := haTokenStatus(t, ctx, c.Token); code != http.StatusOK {
		t.Fatalf("token issued through %s right after the rotation: HTTP %d", standby.NodeID, code)
	}
	if used, _ := auditTokenRequest(t, id, stack.HANamespace, stack.HAScannerSA); !used {
		t.Fatalf("kube audit: the TokenRequest for %s/%s was not made with the rotated credential %s", stack.HANamespace, stack.HAScannerSA, id)
	}
	t.Logf("RESULT vault-ha rotation: creds through standby %s %s after rotate-root on %s, issued with the new credential %s", standby.NodeID, secs(issued), active.NodeID, id)
	if res, err := active.CLI(ctx, "lease", "revoke", c.LeaseID); err != nil || res.ExitCode != 0 {
		t.Fatalf("revoke %s: %v %s", c.LeaseID, err, res)
	}
}
