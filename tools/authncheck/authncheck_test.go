// Package authncheck runs the issuer feature against Kubernetes' own JWT
// authenticator (k8s.io/apiserver, the version kube-apiserver is built
// from), without a cluster, for every signing algorithm: the
// AuthenticationConfiguration that clusters/<name>/authentication-config
// writes must decode and validate as kube-apiserver's
// --authentication-config loader does, a token the plugin signs (captured
// on the wire) must authenticate as the username the plugin reports, with
// the keys fetched from the plugin's JWKS, and a re-pointed endpoint's token
// must be refused. The real-stack test covers RS256 against a running
// kube-apiserver; this covers ES256 too.
package authncheck

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/vault-plugin-scanner/vault-plugin-scanner/backend"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	api "k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/apis/apiserver/install"
	"k8s.io/apiserver/pkg/apis/apiserver/validation"
	authenticationcel "k8s.io/apiserver/pkg/authentication/cel"
	"k8s.io/apiserver/plugin/pkg/authenticator/token/oidc"
)

// apiServer stands for the cluster: it records the bearer tokens it gets
// and answers 401 to all but /version.
type apiServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newAPIServer(t *testing.T) *apiServer {
	a := &apiServer{}
	a.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/version" {
			fmt.Fprint(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2"}`)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}`)
	}))
	t.Cleanup(a.Close)
	return a
}

// firstToken is the first bearer token the server got since the last call.
func (a *apiServer) firstToken(t *testing.T) string {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		t.Fatal("the plugin sent no request")
	}
	tok := a.seen[0]
	a.seen = nil
	return tok
}

func TestAuthenticationConfigAgainstKubernetes(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			ctx := context.Background()
			srv := newAPIServer(t)
			ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

			conf := logical.TestBackendConfig()
			conf.StorageView = &logical.InmemStorage{}
			conf.System = &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
			b, err := backend.Factory("check")(ctx, conf)
			if err != nil {
				t.Fatal(err)
			}
			do := func(op logical.Operation, path string, data map[string]interface{}) *logical.Response {
				t.Helper()
				resp, err := b.HandleRequest(ctx, &logical.Request{Operation: op, Path: path, Storage: conf.StorageView, Data: data, MountPoint: "scanner/"})
				if err != nil {
					t.Fatalf("%s %s: %v", op, path, err)
				}
				if resp != nil && resp.IsError() {
					t.Fatalf("%s %s: %v", op, path, resp.Error())
				}
				return resp
			}
			// check calls the API server (and fails there: the fake refuses).
			check := func() string {
				_, _ = b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "clusters/c1/check", Storage: conf.StorageView, MountPoint: "scanner/"})
				return srv.firstToken(t)
			}

			// The first key set is made with the configured algorithm.
			do(logical.UpdateOperation, "issuer/config", map[string]interface{}{"issuer": "https://vault.example.com:8200/v1/scanner", "issuer_ca_cert": ca, "signing_algorithm": alg})
			do(logical.UpdateOperation, "clusters/c1", map[string]interface{}{"kubernetes_host": srv.URL, "kubernetes_ca_cert": ca, "use_issuer": true})
			ac := do(logical.ReadOperation, "clusters/c1/authentication-config", nil).Data

			scheme := runtime.NewScheme()
			install.Install(scheme)
			codecs := serializer.NewCodecFactory(scheme, serializer.EnableStrict)
			obj, gvk, err := codecs.UniversalDecoder().Decode([]byte(ac["authentication_config"].(string)), nil, &api.AuthenticationConfiguration{})
			if err != nil {
				t.Fatalf("kube-apiserver's decoder refuses the configuration: %v", err)
			}
			cfg := obj.(*api.AuthenticationConfiguration)
			if err := validation.ValidateAuthenticationConfiguration(authenticationcel.NewDefaultCompiler(), cfg, []string{"https://kubernetes.default.svc"}).ToAggregate(); err != nil {
				t.Fatalf("kube-apiserver's validation refuses the configuration: %v", err)
			}

			token := check()
			keysResp := do(logical.ReadOperation, ".well-known/keys", nil)
			jwksBody := keysResp.Data[logical.HTTPRawBody].([]byte)
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(jwksBody, &set); err != nil {
				t.Fatal(err)
			}
			jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwksBody) }))
			t.Cleanup(jwks.Close)
			authn, err := oidc.New(ctx, oidc.Options{JWTAuthenticator: cfg.JWT[0], KeySet: gooidc.NewRemoteKeySet(ctx, jwks.URL), SupportedSigningAlgs: oidc.AllValidSigningAlgorithms()})
			if err != nil {
				t.Fatal(err)
			}
			r, ok, err := authn.AuthenticateToken(ctx, token)
			if err != nil || !ok || r.User.GetName() != ac["username"] {
				t.Fatalf("the plugin's %s token: authenticated=%v as %v (%v), want %q", alg, ok, r, err, ac["username"])
			}

			// A re-pointed endpoint signs for another audience: refused.
			do(logical.UpdateOperation, "clusters/c1", map[string]interface{}{"tls_server_name": "127.0.0.1"})
			if _, ok, err := authn.AuthenticateToken(ctx, check()); ok {
				t.Fatalf("a re-pointed endpoint's token (another audience) was accepted (%v)", err)
			}
			t.Logf("%s: %s %s decoded and validated; the plugin's token accepted as %q; a re-pointed endpoint's refused", alg, gvk.Version, gvk.Kind, r.User.GetName())
		})
	}
}
