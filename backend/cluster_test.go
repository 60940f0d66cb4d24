package backend

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// attacker is what someone with write access to clusters/ but without the
// stored credential would set up: a TLS endpoint with a CA of their own,
// reached through an HTTP proxy of their own that sends every CONNECT to
// it. It records the Authorization header of every request it gets.
type attacker struct {
	tlsServer *httptest.Server
	proxy     *httptest.Server
	caPEM     string

	mu   sync.Mutex
	seen []string
}

func newAttacker(t *testing.T) *attacker {
	t.Helper()
	a := &attacker{}
	a.tlsServer = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Header.Get("Authorization"))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2"}`)
	}))
	t.Cleanup(a.tlsServer.Close)
	a.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.tlsServer.Certificate().Raw}))
	target := a.tlsServer.Listener.Addr().String()
	a.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	t.Cleanup(a.proxy.Close)
	return a
}

func (a *attacker) authorizations() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// The stored credential is only ever sent to the endpoint it was written
// for: a clusters/ writer who changes the proxy and the CA, keeping the host,
// is refused unless they send the credential with it. The real client is
// used, so the attacker's endpoint would see the token if it were sent.
func TestStoredCredentialStaysWithItsEndpoint(t *testing.T) {
	a := newAttacker(t)
	b, s, _ := newTestBackend(t)
	b.newKubeAPI = newClientsetAPI
	// The real API server is "https://127.0.0.1:<closed port>": the
	// attacker's certificate is valid for 127.0.0.1 too.
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host": "https://127.0.0.1:1", "kubernetes_ca_cert": testCAPEM(t), "service_account_jwt": testRequesterJWT,
	})
	configureRole(t, b, s, nil)
	attack := map[string]interface{}{"proxy_url": a.proxy.URL, "kubernetes_ca_cert": a.caPEM}

	state := recordState(t, b, s, newFakeKube(t), "clusters/"+testCluster)
	mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, attack, "service_account_jwt")
	mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"proxy_url": a.proxy.URL}, "service_account_jwt")
	mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_ca_cert": a.caPEM}, "service_account_jwt")
	state.check(t)
	_, _ = request(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	_, _ = request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	for _, auth := range a.authorizations() {
		if strings.Contains(auth, testRequesterJWT) {
			t.Fatal("the stored credential reached the attacker's endpoint")
		}
	}

	// With a credential of their own the writer may point the plugin
	// anywhere: only that credential goes there. This also proves the
	// attacker's endpoint is reachable and would have seen the stored one.
	attack["service_account_jwt"] = otherJWT
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, attack)
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	if resp.Data["kubernetes_version"] != "v1.37.2" {
		t.Fatalf("check through the proxy: %#v", resp.Data)
	}
	seen := a.authorizations()
	if len(seen) == 0 {
		t.Fatal("the control request never reached the attacker's endpoint")
	}
	for _, auth := range seen {
		if auth != "Bearer "+otherJWT {
			t.Errorf("the attacker's endpoint saw %q, want only their own credential", auth)
		}
	}
}

// In-cluster mode sends the pod's own token; it goes only to the in-cluster
// API server with the pod's CA, whatever a clusters/ writer sets.
func TestPodTokenStaysInCluster(t *testing.T) {
	a := newAttacker(t)
	dir := t.TempDir()
	tokenPath, caPath := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	for path, content := range map[string]string{tokenPath: testRequesterJWT, caPath: testCAPEM(t)} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
	b, s, _ := newTestBackend(t)
	b.newKubeAPI = newClientsetAPI
	b.inCluster = inClusterEnv{TokenPath: tokenPath, CAPath: caPath, Getenv: func(k string) string { return env[k] }}

	for name, data := range map[string]map[string]interface{}{
		"CA and proxy":    {"proxy_url": a.proxy.URL, "kubernetes_ca_cert": a.caPEM},
		"CA":              {"kubernetes_ca_cert": a.caPEM},
		"proxy":           {"proxy_url": a.proxy.URL},
		"TLS server name": {"tls_server_name": "example.com"},
	} {
		t.Run(name, func(t *testing.T) {
			mustBadRequest(t, b, s, logical.CreateOperation, "clusters/"+testCluster, data, "pod's own token")
		})
	}
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{})
	for name, data := range map[string]map[string]interface{}{
		"CA and proxy": {"proxy_url": a.proxy.URL, "kubernetes_ca_cert": a.caPEM},
		"proxy":        {"proxy_url": a.proxy.URL},
	} {
		t.Run("update/"+name, func(t *testing.T) {
			mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, data, "service_account_jwt")
		})
	}
	_, _ = request(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	if seen := a.authorizations(); len(seen) != 0 {
		t.Fatalf("the attacker's endpoint was contacted %d times", len(seen))
	}
	cfg, err := getCluster(context.Background(), s, testCluster)
	if err != nil || cfg.connection() != (connection{}) {
		t.Fatalf("stored in-cluster configuration changed: %+v, %v", cfg, err)
	}
}
