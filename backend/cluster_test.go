package backend

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func configureCluster(t testing.TB, b *backend, s logical.Storage) {
	t.Helper()
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host":     testHost,
		"kubernetes_ca_cert":  testCAPEM(t),
		"service_account_jwt": testRequesterJWT,
	})
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

// newAttacker is what someone with write access to clusters/ but without the
// stored credential would set up: a TLS endpoint with a CA of their own,
// reached through an HTTP proxy of their own that sends every CONNECT to
// it. It records the Authorization header of every request it gets.
func newAttacker(t *testing.T) *apiServer {
	t.Helper()
	return newAPIServer(t, withConnectProxy())
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

func TestClusterKubeconfigExecCommand(t *testing.T) {
	cases := []struct {
		command, want string // want "" means stored
	}{
		{"vault", ""},
		{"bao", ""},
		{"/usr/local/bin/bao", ""},
		{"/bin/sh", "kubeconfig_exec_command must be"},
		{"curl", "kubeconfig_exec_command must be"},
		{"/tmp/bao", "must not point under /tmp/"},
		{"/usr/local/bin/../../../tmp/vault", "kubeconfig_exec_command must be"},
	}
	for _, tc := range cases {
		t.Run(tc.command, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			write := map[string]interface{}{"kubeconfig_exec_command": tc.command}
			if tc.want != "" {
				mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, write, tc.want)
				if got := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster, nil).Data["kubeconfig_exec_command"]; got != "" {
					t.Errorf("a refused write stored %q", got)
				}
				return
			}
			mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, write)
			if got := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster, nil).Data["kubeconfig_exec_command"]; got != tc.command {
				t.Errorf("read kubeconfig_exec_command %q, want %q", got, tc.command)
			}
		})
	}
}
