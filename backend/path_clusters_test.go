package backend

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Helpers shared by the bad-input tests (clusters, roles, creds).

// storageSnapshot returns every storage entry by key, so a test can prove a
// refused request stored nothing (including the write-only JWT, which no read
// shows).
func storageSnapshot(t *testing.T, s logical.Storage) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := logical.CollectKeys(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		entry, err := s.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if entry != nil {
			out[k] = string(entry.Value)
		}
	}
	return out
}

// readResponseData reads path through the backend; nil when nothing is there.
func readResponseData(t *testing.T, b *backend, s logical.Storage, path string) map[string]interface{} {
	t.Helper()
	resp := mustOK(t, b, s, logical.ReadOperation, path, nil)
	if resp == nil {
		return nil
	}
	return resp.Data
}

// untouched records the stored state and, on check, fails if a request
// changed it or created anything in Kubernetes.
type untouched struct {
	b       *backend
	s       logical.Storage
	fk      *fakeKube
	reads   map[string]map[string]interface{}
	storage map[string]string
}

func recordState(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, readPaths ...string) *untouched {
	t.Helper()
	u := &untouched{b: b, s: s, fk: fk, reads: map[string]map[string]interface{}{}, storage: storageSnapshot(t, s)}
	for _, p := range readPaths {
		u.reads[p] = readResponseData(t, b, s, p)
	}
	return u
}

func (u *untouched) check(t *testing.T) {
	t.Helper()
	for p, before := range u.reads {
		if after := readResponseData(t, u.b, u.s, p); !reflect.DeepEqual(before, after) {
			t.Errorf("read %s changed:\nbefore %#v\nafter  %#v", p, before, after)
		}
	}
	if after := storageSnapshot(t, u.s); !reflect.DeepEqual(u.storage, after) {
		t.Errorf("storage changed:\nbefore %v\nafter  %v", sortedKeys(u.storage), sortedKeys(after))
	}
	if n := len(u.fk.managedSecrets(t)); n != 0 {
		t.Errorf("%d Secret(s) created in Kubernetes", n)
	}
	if n := len(u.fk.tokenRequests()); n != 0 {
		t.Errorf("%d TokenRequest(s) sent to Kubernetes", n)
	}
}

// withFields copies base and applies overrides; a nil override removes the field.
func withFields(base, overrides map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range overrides {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func validClusterBody(t *testing.T) map[string]interface{} {
	return map[string]interface{}{
		"kubernetes_host":     testHost,
		"kubernetes_ca_cert":  testCAPEM(t),
		"service_account_jwt": testRequesterJWT,
	}
}

func TestClusterWriteBadInput(t *testing.T) {
	ca, key := testCAPEM(t), testPrivateKeyPEM(t)
	publicKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")}))

	tests := []struct {
		name   string
		fields map[string]interface{} // applied over a valid body; nil removes
		want   string
		// createOnly: on an existing cluster the missing value is the stored one.
		createOnly bool
	}{
		{name: "http host", fields: map[string]interface{}{"kubernetes_host": "http://127.0.0.1:6443"}, want: "kubernetes_host must start with https://"},
		{name: "host without scheme", fields: map[string]interface{}{"kubernetes_host": "kubernetes.example.com"}, want: "kubernetes_host must start with https://"},
		{name: "non-URL host", fields: map[string]interface{}{"kubernetes_host": "not a url"}, want: "kubernetes_host must start with https://"},
		{name: "host:port without scheme", fields: map[string]interface{}{"kubernetes_host": "127.0.0.1:6443"}, want: "kubernetes_host is not a valid URL"},
		{name: "host without host", fields: map[string]interface{}{"kubernetes_host": "https://"}, want: "has no host"},
		{name: "host with user info", fields: map[string]interface{}{"kubernetes_host": "https://admin:hunter2@127.0.0.1:6443"}, want: "must not carry user info"},
		{name: "host with query", fields: map[string]interface{}{"kubernetes_host": "https://127.0.0.1:6443?insecure=true"}, want: "must not carry user info, a query"},
		{name: "host without JWT", fields: map[string]interface{}{"service_account_jwt": nil}, want: "service_account_jwt is required when kubernetes_host is set", createOnly: true},
		{name: "host with empty JWT", fields: map[string]interface{}{"service_account_jwt": ""}, want: "service_account_jwt is required"},
		{name: "unparseable CA", fields: map[string]interface{}{"kubernetes_ca_cert": "MIIB-not-pem"}, want: "kubernetes_ca_cert must be a PEM bundle with at least one certificate"},
		{name: "private key instead of CA", fields: map[string]interface{}{"kubernetes_ca_cert": key}, want: "kubernetes_ca_cert contains a private key"},
		{name: "CA followed by private key", fields: map[string]interface{}{"kubernetes_ca_cert": ca + key}, want: "private key"},
		{name: "CA with a PUBLIC KEY block", fields: map[string]interface{}{"kubernetes_ca_cert": ca + publicKey}, want: `PEM block of type "PUBLIC KEY"`},
		{name: "CA with trailing garbage", fields: map[string]interface{}{"kubernetes_ca_cert": ca + "oops"}, want: "trailing data"},
		{name: "kubeconfig CA is a private key", fields: map[string]interface{}{"kubeconfig_ca_cert": key}, want: "kubeconfig_ca_cert contains a private key"},
		{name: "http kubeconfig_host", fields: map[string]interface{}{"kubeconfig_host": "http://k8s.example.com"}, want: "kubeconfig_host must start with https://"},
		{name: "kubeconfig_host with query", fields: map[string]interface{}{"kubeconfig_host": "https://k8s.example.com?x=1"}, want: "kubeconfig_host must not carry"},
		{name: "ftp proxy", fields: map[string]interface{}{"proxy_url": "ftp://proxy.internal:21"}, want: "proxy_url must use http, https or socks5"},
		{name: "proxy without scheme", fields: map[string]interface{}{"proxy_url": "proxy.internal:3128"}, want: "proxy_url must use http, https or socks5"},
		{name: "proxy without host", fields: map[string]interface{}{"proxy_url": "http://"}, want: "has no host"},
		{name: "tls_server_name with space", fields: map[string]interface{}{"tls_server_name": "kubernetes default"}, want: "tls_server_name \"kubernetes default\" is not a valid DNS name"},
		{name: "tls_server_name with underscore", fields: map[string]interface{}{"tls_server_name": "api_server.local"}, want: "tls_server_name"},
		{name: "tls_server_name URL", fields: map[string]interface{}{"tls_server_name": "https://api.local"}, want: "tls_server_name"},
		{name: "negative qps", fields: map[string]interface{}{"qps": -1}, want: "qps must be between 0"},
		{name: "absurd qps", fields: map[string]interface{}{"qps": 1e9}, want: "qps must be between 0"},
		{name: "infinite qps", fields: map[string]interface{}{"qps": "+Inf"}, want: "qps must be between 0"},
		{name: "NaN qps", fields: map[string]interface{}{"qps": "NaN"}, want: "qps must be between 0"},
		{name: "garbage qps", fields: map[string]interface{}{"qps": "fast"}, want: `field "qps"`},
		{name: "negative burst", fields: map[string]interface{}{"burst": -10}, want: "burst must be between 0"},
		{name: "absurd burst", fields: map[string]interface{}{"burst": 1 << 30}, want: "burst must be between 0"},
		{name: "garbage burst", fields: map[string]interface{}{"burst": "lots"}, want: `field "burst"`},
		{name: "JWT of one part", fields: map[string]interface{}{"service_account_jwt": "s3cr3t-opaque-token"}, want: "service_account_jwt does not look like a JWT"},
		{name: "JWT of two parts", fields: map[string]interface{}{"service_account_jwt": "eyJzZWNyZXQ.eyJzZWNyZXQy"}, want: "does not look like a JWT"},
		{name: "JWT with Bearer prefix", fields: map[string]interface{}{"service_account_jwt": "Bearer " + testRequesterJWT}, want: "does not look like a JWT"},
		{name: "unknown field", fields: map[string]interface{}{"kubernetes_hots": testHost}, want: "unknown field(s) kubernetes_hots"},
		{name: "unknown field for the JWT", fields: map[string]interface{}{"service_account_token": "x.y.z"}, want: "unknown field(s) service_account_token"},
	}
	for _, tc := range tests {
		for _, mode := range []string{"create", "update"} {
			if mode == "update" && tc.createOnly {
				continue
			}
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				b, s, fk := newConfiguredBackend(t)
				op, path := logical.CreateOperation, "clusters/cluster-new"
				if mode == "update" {
					op, path = logical.UpdateOperation, "clusters/"+testCluster
				}
				state := recordState(t, b, s, fk, "clusters/"+testCluster, "clusters/cluster-new", "roles/"+testRole)

				data := withFields(validClusterBody(t), tc.fields)
				resp, err := request(t, b, s, op, path, data)
				if err != nil {
					t.Fatalf("want a 400, got internal error %v", err)
				}
				if resp == nil || !resp.IsError() {
					t.Fatalf("want a 400, got %#v", resp)
				}
				msg := resp.Error().Error()
				if !containsFold(msg, tc.want) {
					t.Errorf("error %q does not mention %q", msg, tc.want)
				}
				// Nothing submitted as a credential may come back in an error.
				for _, secret := range []string{"hunter2", "s3cr3t", "eyJzZWNyZXQ", testRequesterJWT} {
					if strings.Contains(msg, secret) {
						t.Errorf("error %q echoes a credential", msg)
					}
				}
				state.check(t)
			})
		}
	}
}

func TestClusterNames(t *testing.T) {
	for _, name := range []string{"a..b", strings.Repeat("c", 300), "clüster", "-leading", "trailing.", "trailing-", "_under", "sp ace", "a*"} {
		t.Run(name[:min(len(name), 20)], func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			state := recordState(t, b, s, fk, "clusters/"+testCluster)
			mustBadRequest(t, b, s, logical.CreateOperation, "clusters/"+name, validClusterBody(t), "cluster name")
			mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+name, validClusterBody(t), "cluster name")
			mustBadRequest(t, b, s, logical.ReadOperation, "clusters/"+name, nil, "cluster name")
			mustBadRequest(t, b, s, logical.DeleteOperation, "clusters/"+name, nil, "cluster name")
			state.check(t)
		})
	}
	for _, name := range []string{"Cluster-A", "prod.eu-1", "k8s_2", "x", strings.Repeat("c", maxVaultNameLength)} {
		t.Run("valid "+name[:min(len(name), 20)], func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			mustOK(t, b, s, logical.CreateOperation, "clusters/"+name, validClusterBody(t))
			if got := readResponseData(t, b, s, "clusters/"+name); got == nil || got["kubernetes_host"] != testHost {
				t.Fatalf("read back %#v", got)
			}
		})
	}
}

func TestClusterHostChangeNeedsJWT(t *testing.T) {
	const newHost = "https://10.0.0.2:6443"
	const newJWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJuZXcifQ.bmV3LXNpZ25hdHVyZQ"

	refused := []struct {
		name string
		data map[string]interface{}
	}{
		{"new host", map[string]interface{}{"kubernetes_host": newHost}},
		{"new host and CA", map[string]interface{}{"kubernetes_host": newHost, "kubernetes_ca_cert": testCAPEM(t)}},
		{"new port", map[string]interface{}{"kubernetes_host": "https://127.0.0.1:443"}},
		{"new path", map[string]interface{}{"kubernetes_host": testHost + "/proxy"}},
		{"host unset (in-cluster address)", map[string]interface{}{"kubernetes_host": ""}},
		{"proxy", map[string]interface{}{"proxy_url": "http://attacker.example:3128"}},
		{"CA", map[string]interface{}{"kubernetes_ca_cert": otherCAPEM(t)}},
		{"proxy and CA, host kept", map[string]interface{}{"kubernetes_host": testHost, "proxy_url": "https://attacker.example:8443", "kubernetes_ca_cert": otherCAPEM(t)}},
		{"TLS server name", map[string]interface{}{"tls_server_name": "attacker.example"}},
		{"CA removed (system roots)", map[string]interface{}{"kubernetes_ca_cert": ""}},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			state := recordState(t, b, s, fk, "clusters/"+testCluster)
			mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, tc.data, "send service_account_jwt in the same write")
			state.check(t)
			if got := readResponseData(t, b, s, "clusters/"+testCluster)["kubernetes_host"]; got != testHost {
				t.Fatalf("stored host is %v, want %s", got, testHost)
			}
		})
	}

	t.Run("new host with the JWT", func(t *testing.T) {
		b, s, _ := newConfiguredBackend(t)
		mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
			"kubernetes_host": newHost, "service_account_jwt": newJWT,
		})
		got := readResponseData(t, b, s, "clusters/"+testCluster)
		if got["kubernetes_host"] != newHost || got["service_account_jwt_set"] != true {
			t.Fatalf("read back %#v", got)
		}
		if got["kubernetes_ca_cert"] != testCAPEM(t) {
			t.Fatalf("the CA was dropped by an update that did not send it")
		}
		// The client is rebuilt for the new host, with the new credential.
		rc := lastRestConfig(t, b, s)
		if rc.Host != newHost || rc.BearerToken != newJWT {
			t.Fatalf("client built for %s with a stale credential: %v", rc.Host, rc.BearerToken == testRequesterJWT)
		}
	})

	t.Run("new host with an invalid JWT", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		state := recordState(t, b, s, fk, "clusters/"+testCluster)
		mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
			"kubernetes_host": newHost, "service_account_jwt": "not-a-jwt",
		}, "does not look like a JWT")
		state.check(t)
	})

	for _, same := range []string{testHost, testHost + "/", " " + testHost + " ", strings.ToUpper("https://") + "127.0.0.1:6443"} {
		t.Run("same host without the JWT/"+same, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
				"kubernetes_host": same, "qps": 50,
			})
			got := readResponseData(t, b, s, "clusters/"+testCluster)
			if got["service_account_jwt_set"] != true || got["qps"] != float32(50) {
				t.Fatalf("read back %#v", got)
			}
			if !hostsEqual(got["kubernetes_host"].(string), testHost) {
				t.Fatalf("stored host %v", got["kubernetes_host"])
			}
			if rc := lastRestConfig(t, b, s); rc.BearerToken != testRequesterJWT {
				t.Fatal("the stored JWT was lost")
			}
		})
	}

	t.Run("other fields without the JWT", func(t *testing.T) {
		b, s, _ := newConfiguredBackend(t)
		mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
			"kubeconfig_host": "https://scanners.example.com", "burst": 2000,
		})
		got := readResponseData(t, b, s, "clusters/"+testCluster)
		if got["kubernetes_host"] != testHost || got["kubeconfig_host"] != "https://scanners.example.com" || got["burst"] != 2000 || got["service_account_jwt_set"] != true {
			t.Fatalf("read back %#v", got)
		}
	})

	// Each write is judged against what is stored: splitting a change over
	// several writes needs the credential in each that changes the endpoint.
	t.Run("proxy then CA over two writes", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		state := recordState(t, b, s, fk, "clusters/"+testCluster)
		mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"proxy_url": "http://attacker.example:3128"}, "service_account_jwt")
		mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_ca_cert": otherCAPEM(t)}, "service_account_jwt")
		state.check(t)
	})
}

// lastRestConfig returns the host and bearer token of the (cached or newly
// built) client of testCluster.
func lastRestConfig(t *testing.T, b *backend, s logical.Storage) struct{ Host, BearerToken string } {
	t.Helper()
	c, err := b.client(context.Background(), s, testCluster)
	if err != nil {
		t.Fatal(err)
	}
	return struct{ Host, BearerToken string }{c.endpoint.restConfig.Host, c.endpoint.restConfig.BearerToken}
}

func TestClusterReadNeverReturnsJWT(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	// An update that does not touch the JWT must not expose it either.
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubeconfig_host": "https://scanners.example.com"})
	parts := strings.Split(testRequesterJWT, ".")

	assertNoJWT := func(t *testing.T, what string, v interface{}) {
		t.Helper()
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{testRequesterJWT, parts[1], parts[2]} {
			if strings.Contains(string(out), secret) {
				t.Fatalf("%s contains the JWT: %s", what, out)
			}
		}
	}

	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster, nil)
	if resp == nil {
		t.Fatal("no read response")
	}
	assertNoJWT(t, "read response", resp)
	if resp.Data["service_account_jwt_set"] != true {
		t.Fatalf("service_account_jwt_set = %v, want true", resp.Data["service_account_jwt_set"])
	}
	if _, ok := resp.Data["service_account_jwt"]; ok {
		t.Fatal("read response has a service_account_jwt key")
	}

	list := mustOK(t, b, s, logical.ListOperation, "clusters/", nil)
	assertNoJWT(t, "list response", list)

	help, err := request(t, b, s, logical.HelpOperation, "clusters/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if help == nil || help.Data["help"] == nil {
		t.Fatalf("help response %#v", help)
	}
	assertNoJWT(t, "help response", help)
	help, err = request(t, b, s, logical.HelpOperation, "clusters/"+testCluster, nil)
	if err != nil {
		t.Fatal(err)
	}
	assertNoJWT(t, "help response", help)

	// In-cluster mode: no JWT stored, so the flag is false.
	mustOK(t, b, s, logical.CreateOperation, "clusters/in-cluster", map[string]interface{}{})
	if got := readResponseData(t, b, s, "clusters/in-cluster")["service_account_jwt_set"]; got != false {
		t.Fatalf("in-cluster service_account_jwt_set = %v, want false", got)
	}
}

func TestClusterDelete(t *testing.T) {
	t.Run("used by roles", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		mustOK(t, b, s, logical.CreateOperation, "roles/second-role", map[string]interface{}{
			"cluster": testCluster, "service_account_name": testSA, "service_account_namespace": testNamespace,
		})
		state := recordState(t, b, s, fk, "clusters/"+testCluster, "roles/"+testRole, "roles/second-role")
		resp, err := request(t, b, s, logical.DeleteOperation, "clusters/"+testCluster, nil)
		if err != nil || resp == nil || !resp.IsError() {
			t.Fatalf("want a 400, got %#v, %v", resp, err)
		}
		msg := resp.Error().Error()
		for _, want := range []string{`cluster "cluster-a" is used by role(s) cluster-a, second-role`, "delete or move them first"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
		state.check(t)
	})

	t.Run("unused", func(t *testing.T) {
		b, s, _ := newConfiguredBackend(t)
		mustOK(t, b, s, logical.CreateOperation, "clusters/cluster-b", validClusterBody(t))
		mustOK(t, b, s, logical.DeleteOperation, "clusters/cluster-b", nil)
		if got := readResponseData(t, b, s, "clusters/cluster-b"); got != nil {
			t.Fatalf("cluster-b still readable: %#v", got)
		}
		// Once its last role is gone, the cluster can go too.
		mustOK(t, b, s, logical.DeleteOperation, "roles/"+testRole, nil)
		mustOK(t, b, s, logical.DeleteOperation, "clusters/"+testCluster, nil)
		// Only the retired endpoints stay, so outstanding leases remain revocable.
		for _, key := range sortedKeys(storageSnapshot(t, s)) {
			if !strings.HasPrefix(key, retiredEndpointPrefix+"cluster-a/") && !strings.HasPrefix(key, retiredEndpointPrefix+"cluster-b/") {
				t.Errorf("storage still holds %s", key)
			}
		}
		// Deleting what is not there is not an error.
		mustOK(t, b, s, logical.DeleteOperation, "clusters/"+testCluster, nil)
	})
}

func TestClusterList(t *testing.T) {
	b, s, _ := newTestBackend(t)
	if resp := mustOK(t, b, s, logical.ListOperation, "clusters/", nil); len(resp.Data) != 0 && resp.Data["keys"] != nil {
		t.Fatalf("empty mount lists %#v", resp.Data)
	}
	for _, name := range []string{"zeta", "alpha", "Cluster-A"} {
		mustOK(t, b, s, logical.CreateOperation, "clusters/"+name, validClusterBody(t))
	}
	for _, path := range []string{"clusters/", "clusters"} {
		resp := mustOK(t, b, s, logical.ListOperation, path, nil)
		got, _ := resp.Data["keys"].([]string)
		sort.Strings(got)
		if want := []string{"Cluster-A", "alpha", "zeta"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("list %s = %#v, want %#v", path, got, want)
		}
	}
}

// What issued kubeconfigs carry must build at write time: a C1 control
// character passes url.Parse but would fail the kubeconfig after a token
// was issued.
func TestClusterWriteRefusesUnbuildableKubeconfig(t *testing.T) {
	for _, host := range []string{"https://scanners.example.com/a\u0085b", "https://scanners.example.com/\u009b"} {
		b, s, fk := newConfiguredBackend(t)
		state := recordState(t, b, s, fk, "clusters/"+testCluster)
		mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubeconfig_host": host}, "")
		state.check(t)
		mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	}
}

func TestClusterIssuerModeWrite(t *testing.T) {
	refused := []struct {
		name   string
		issuer bool // issuer/config written first
		data   map[string]interface{}
		want   string
	}{
		{"issuer not configured", false, map[string]interface{}{"kubernetes_host": testHost, "use_issuer": true}, "write issuer/config first"},
		{"with service_account_jwt", true, map[string]interface{}{"kubernetes_host": testHost, "use_issuer": true, "service_account_jwt": testRequesterJWT}, "service_account_jwt must not be set with use_issuer"},
		{"without host", true, map[string]interface{}{"use_issuer": true}, "use_issuer needs kubernetes_host"},
		{"with rotation_period", true, map[string]interface{}{"kubernetes_host": testHost, "use_issuer": true, "rotation_period": "1h"}, "rotation_period"},
		{"choosing the audience", true, map[string]interface{}{"kubernetes_host": testHost, "use_issuer": true, "issuer_audience": "https://kubernetes.default.svc"}, "unknown field(s) issuer_audience"},
		{"choosing the subject", true, map[string]interface{}{"kubernetes_host": testHost, "use_issuer": true, "issuer_subject": "admin"}, "unknown field(s) issuer_subject"},
		{"choosing the issuer", true, map[string]interface{}{"kubernetes_host": testHost, "use_issuer": true, "issuer": "https://evil.example"}, "unknown field(s) issuer"},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			b, s, fk := newTestBackend(t)
			if tc.issuer {
				configureIssuer(t, b, s, nil)
			}
			state := recordState(t, b, s, fk, "clusters/"+testCluster)
			mustBadRequest(t, b, s, logical.CreateOperation, "clusters/"+testCluster, tc.data, tc.want)
			state.check(t)
		})
	}

	t.Run("read", func(t *testing.T) {
		b, s, _ := newTestBackend(t)
		configureIssuer(t, b, s, nil)
		resp := mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_host": testHost, "kubernetes_ca_cert": testCAPEM(t), "use_issuer": true})
		if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "authentication-config") {
			t.Errorf("the write does not warn that the API server must trust the audience: %v", resp)
		}
		got := readResponseData(t, b, s, "clusters/"+testCluster)
		if got["use_issuer"] != true || got["issuer_audience"] != issuerAudiencePrefix+got["endpoint_id"].(string) || got["issuer_subject"] != "scanner:"+testCluster || got["service_account_jwt_set"] != false {
			t.Errorf("read back %v", got)
		}
		if rc := lastRestConfig(t, b, s); rc.BearerToken != "" {
			t.Error("a client in issuer mode carries a static bearer token")
		}
	})
}

// Every change of where the plugin connects makes a new endpoint and so a
// new audience, without a credential in the write; the subject stays, even
// after a remount; the retired endpoint keeps its audience and subject.
func TestClusterIssuerModeRepoint(t *testing.T) {
	changes := []struct {
		name string
		data map[string]interface{}
	}{
		{"host", map[string]interface{}{"kubernetes_host": "https://10.0.0.2:6443"}},
		{"CA", map[string]interface{}{"kubernetes_ca_cert": otherCAPEM(t)}},
		{"TLS server name", map[string]interface{}{"tls_server_name": "api.example"}},
		{"proxy", map[string]interface{}{"proxy_url": "http://proxy.example:3128"}},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureIssuer(t, b, s, nil)
			configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
			before := readResponseData(t, b, s, "clusters/"+testCluster)

			req := &logical.Request{Operation: logical.UpdateOperation, Path: "clusters/" + testCluster, Storage: s, Data: tc.data, MountPoint: "remounted/"}
			resp, err := b.HandleRequest(context.Background(), req)
			if err != nil || resp == nil || resp.IsError() {
				t.Fatalf("re-pointing in issuer mode: %v %v", resp, err)
			}
			after := readResponseData(t, b, s, "clusters/"+testCluster)
			if after["issuer_audience"] == before["issuer_audience"] || after["endpoint_id"] == before["endpoint_id"] {
				t.Errorf("audience %v kept after a change of %s", after["issuer_audience"], tc.name)
			}
			if !strings.Contains(strings.Join(resp.Warnings, " "), after["issuer_audience"].(string)) {
				t.Errorf("warnings %q do not name the new audience", resp.Warnings)
			}
			if after["issuer_subject"] != before["issuer_subject"] {
				t.Errorf("subject changed from %v to %v", before["issuer_subject"], after["issuer_subject"])
			}
			retired := after["retired_endpoints"].([]map[string]interface{})
			if len(retired) != 1 || retired[0]["issuer_audience"] != before["issuer_audience"] {
				t.Errorf("retired endpoints %v, want the old audience kept", retired)
			}
			rec, _ := getRetiredEndpoint(context.Background(), s, testCluster, before["endpoint_id"].(string))
			if rec == nil || rec.Config.IssuerSubject != before["issuer_subject"] || !rec.Config.UseIssuer {
				t.Errorf("retired endpoint %+v lost its issuer identity", rec)
			}
		})
	}
}

func TestClusterIssuerModeSwitch(t *testing.T) {
	t.Run("into issuer mode", func(t *testing.T) {
		b, s, _ := newTestBackend(t)
		configureIssuer(t, b, s, nil)
		mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
			"kubernetes_host": testHost, "kubernetes_ca_cert": testCAPEM(t), "service_account_jwt": bootstrapJWT("j1", time.Hour), "rotation_period": "1h",
		})
		old := readResponseData(t, b, s, "clusters/"+testCluster)
		mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"use_issuer": true})
		got := readResponseData(t, b, s, "clusters/"+testCluster)
		if got["service_account_jwt_set"] != false || got["rotation_period"] != int64(0) || got["endpoint_id"] == old["endpoint_id"] {
			t.Errorf("after switching into issuer mode: %v", got)
		}
		// The stored credential stays with the retired endpoint, for revoke.
		rec, _ := getRetiredEndpoint(context.Background(), s, testCluster, old["endpoint_id"].(string))
		if rec == nil || rec.Config.JWT == "" {
			t.Error("the retired endpoint lost its credential")
		}
	})
	t.Run("out of issuer mode needs the JWT", func(t *testing.T) {
		b, s, fk := newTestBackend(t)
		configureIssuer(t, b, s, nil)
		configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
		state := recordState(t, b, s, fk, "clusters/"+testCluster)
		mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"use_issuer": false}, "needs service_account_jwt")
		state.check(t)
		mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"use_issuer": false, "service_account_jwt": testRequesterJWT})
		got := readResponseData(t, b, s, "clusters/"+testCluster)
		if got["use_issuer"] != false || got["issuer_audience"] != "" || got["issuer_subject"] != "" {
			t.Errorf("after leaving issuer mode: %v", got)
		}
	})
}
