// Command authncheck runs the issuer feature against Kubernetes' own JWT
// authenticator (k8s.io/apiserver, the version kube-apiserver is built
// from), without a cluster: the AuthenticationConfiguration that
// clusters/<name>/authentication-config writes must decode and validate as
// kube-apiserver's --authentication-config loader does, a token the plugin
// signs (captured on the wire) must authenticate as the username the plugin
// reports, with the keys fetched from the plugin's JWKS, and a re-pointed
// endpoint's token must be refused. Exit status 1 on any failure.
package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
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

func must(err error) {
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
}

func main() {
	ctx := context.Background()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/version" {
			fmt.Fprint(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2"}`)
			return
		}
		w.WriteHeader(401)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}`)
	}))
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.System = &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
	b, err := backend.Factory("check")(ctx, conf)
	must(err)
	s := conf.StorageView
	do := func(op logical.Operation, path string, data map[string]interface{}) *logical.Response {
		resp, err := b.HandleRequest(ctx, &logical.Request{Operation: op, Path: path, Storage: s, Data: data, MountPoint: "scanner/"})
		must(err)
		if resp != nil && resp.IsError() {
			must(resp.Error())
		}
		return resp
	}
	for _, alg := range []string{"RS256", "ES256"} {
		do(logical.UpdateOperation, "issuer/config", map[string]interface{}{"issuer": "https://vault.example.com:8200/v1/scanner", "issuer_ca_cert": ca, "signing_algorithm": alg})
		do(logical.UpdateOperation, "issuer/rotate", nil)
		do(logical.UpdateOperation, "clusters/c1", map[string]interface{}{"kubernetes_host": srv.URL, "kubernetes_ca_cert": ca, "use_issuer": true})
		ac := do(logical.ReadOperation, "clusters/c1/authentication-config", nil).Data

		scheme := runtime.NewScheme()
		install.Install(scheme)
		codecs := serializer.NewCodecFactory(scheme, serializer.EnableStrict)
		obj, gvk, err := codecs.UniversalDecoder().Decode([]byte(ac["authentication_config"].(string)), nil, &api.AuthenticationConfiguration{})
		must(err)
		cfg := obj.(*api.AuthenticationConfiguration)
		must(validation.ValidateAuthenticationConfiguration(authenticationcel.NewDefaultCompiler(), cfg, []string{"https://kubernetes.default.svc"}).ToAggregate())

		// A token the plugin signs, as the API server receives it.
		mu.Lock()
		seen = nil
		mu.Unlock()
		_, _ = b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "clusters/c1/check", Storage: s, MountPoint: "scanner/"})
		mu.Lock()
		token := strings.TrimPrefix(seen[0], "Bearer ")
		mu.Unlock()

		keysResp := do(logical.ReadOperation, ".well-known/keys", nil)
		jwksBody := keysResp.Data[logical.HTTPRawBody].([]byte)
		var set jose.JSONWebKeySet
		must(json.Unmarshal(jwksBody, &set))
		jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwksBody) }))
		defer jwks.Close()
		ks := gooidc.NewRemoteKeySet(ctx, jwks.URL)
		authn, err := oidc.New(ctx, oidc.Options{JWTAuthenticator: cfg.JWT[0], KeySet: ks, SupportedSigningAlgs: oidc.AllValidSigningAlgorithms()})
		must(err)
		r, ok, err := authn.AuthenticateToken(ctx, token)
		must(err)
		if !ok || r.User.GetName() != ac["username"] {
			must(fmt.Errorf("authenticated=%v as %q, want %q", ok, r.User.GetName(), ac["username"]))
		}
		// A token for another audience is refused.
		do(logical.UpdateOperation, "clusters/c1", map[string]interface{}{"tls_server_name": "127.0.0.1"})
		mu.Lock()
		seen = nil
		mu.Unlock()
		_, _ = b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "clusters/c1/check", Storage: s, MountPoint: "scanner/"})
		mu.Lock()
		other := strings.TrimPrefix(seen[0], "Bearer ")
		mu.Unlock()
		_, ok2, err2 := authn.AuthenticateToken(ctx, other)
		if ok2 {
			must(fmt.Errorf("a re-pointed endpoint's token (another audience) was accepted"))
		}
		fmt.Printf("%s: %s decoded as %s, validated; token accepted as %q; re-pointed endpoint's token accepted=%v (%v)\n", alg, gvk.Version, gvk.Kind, r.User.GetName(), ok2, err2)
		do(logical.UpdateOperation, "clusters/c1", map[string]interface{}{"use_issuer": false, "service_account_jwt": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXF1ZXN0ZXIifQ.c2ln"})
		_, _ = b.HandleRequest(ctx, &logical.Request{Operation: logical.DeleteOperation, Path: "clusters/c1", Storage: s, MountPoint: "scanner/"})
	}
}
