package backend

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
)

func TestCredsIssue(t *testing.T) {
	for _, op := range []logical.Operation{logical.ReadOperation, logical.UpdateOperation} {
		t.Run(string(op), func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			before := time.Now()
			resp := mustOK(t, b, s, op, "creds/"+testRole, nil)

			if resp.Secret == nil {
				t.Fatal("response carries no lease")
			}
			if resp.Secret.Renewable {
				t.Error("lease is renewable; it must not be")
			}
			if resp.Secret.TTL != defaultRoleTTL {
				t.Errorf("lease TTL = %s, want the role default %s", resp.Secret.TTL, defaultRoleTTL)
			}

			secrets := fk.managedSecrets(t)
			if len(secrets) != 1 {
				t.Fatalf("bound Secrets = %d, want 1", len(secrets))
			}
			secret := secrets[0]
			assertBoundSecret(t, secret, before)

			trs := fk.tokenRequests()
			if len(trs) != 1 {
				t.Fatalf("TokenRequests = %d, want 1", len(trs))
			}
			ref := trs[0].Spec.BoundObjectRef
			if ref.Kind != "Secret" || ref.APIVersion != "v1" || ref.Name != secret.Name || ref.UID != secret.UID {
				t.Errorf("boundObjectRef = %+v, want Secret %s uid %s", ref, secret.Name, secret.UID)
			}
			if got := *trs[0].Spec.ExpirationSeconds; got != 930 {
				t.Errorf("expirationSeconds = %d, want 930 (15m lease + 30s skew)", got)
			}
			if trs[0].Spec.Audiences != nil {
				t.Errorf("audiences = %v, want none (the API server's own)", trs[0].Spec.Audiences)
			}

			token := resp.Data["service_account_token"].(string)
			claims, err := parseTokenClaims(token)
			if err != nil {
				t.Fatal(err)
			}
			if claims.JTI == "" || resp.Data["credential_id"] != "JTI="+claims.JTI {
				t.Errorf("credential_id = %v, want JTI=%s", resp.Data["credential_id"], claims.JTI)
			}
			for field, want := range map[string]string{
				"cluster":                   testCluster,
				"service_account_name":      testSA,
				"service_account_namespace": testNamespace,
				"kubernetes_host":           testHost,
				"kubernetes_ca_cert":        testCAPEM(t),
			} {
				if resp.Data[field] != want {
					t.Errorf("%s = %v, want %v", field, resp.Data[field], want)
				}
			}
			expiresAt, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
			if err != nil {
				t.Fatalf("expires_at: %v", err)
			}
			if d := expiresAt.Sub(before.Add(defaultRoleTTL)); d < -time.Second || d > 5*time.Second {
				t.Errorf("expires_at %s is %s away from issue time + 15m", expiresAt, d)
			}
			for _, reserved := range []string{"data", "lease_id", "lease_duration", "renewable", "request_id", "refresh_interval"} {
				if _, ok := resp.Data[reserved]; ok {
					t.Errorf("response data uses the reserved key %q", reserved)
				}
			}

			internal := resp.Secret.InternalData
			lease, err := leaseRecordFrom(internal)
			if err != nil {
				t.Fatal(err)
			}
			want := objectRef{Kind: kindSecret, Namespace: testNamespace, Name: secret.Name, UID: secret.UID}
			if len(lease.Objects) != 1 || lease.Objects[0] != want || lease.Cluster != testCluster {
				t.Errorf("internal data %v does not name the bound Secret %v", internal, want)
			}
			if strings.Contains(mustJSON(t, internal), token) {
				t.Error("internal data holds the token")
			}
			assertKubeconfig(t, resp.Data["kubeconfig"].(string), token)
			assertKubeconfig(t, resp.Data["kubeconfig_json"].(string), token)
			if strings.Contains(resp.Data["kubeconfig_json"].(string), "\n") {
				t.Error("kubeconfig_json spans several lines")
			}
			if !json.Valid([]byte(resp.Data["kubeconfig_json"].(string))) {
				t.Error("kubeconfig_json is not JSON")
			}
			if wals, _ := framework.ListWAL(t.Context(), s); len(wals) != 0 {
				t.Errorf("WAL entries left after a successful issue: %d", len(wals))
			}
		})
	}
}

func assertBoundSecret(t *testing.T, secret corev1.Secret, issued time.Time) {
	t.Helper()
	if secret.Namespace != testNamespace {
		t.Errorf("Secret namespace = %s, want %s", secret.Namespace, testNamespace)
	}
	if !strings.HasPrefix(secret.Name, boundSecretNameStart) || len(secret.Name) != len(boundSecretNameStart)+16 {
		t.Errorf("Secret name %q is not a random plugin name", secret.Name)
	}
	if secret.Labels[managedByLabel] != managedByValue {
		t.Errorf("labels = %v", secret.Labels)
	}
	if secret.Annotations[roleAnnotation] != testRole || secret.Annotations[clusterAnnotation] != testCluster {
		t.Errorf("annotations = %v", secret.Annotations)
	}
	exp, err := time.Parse(time.RFC3339, secret.Annotations[expiresAtAnnotation])
	if err != nil || exp.Before(issued.Add(defaultRoleTTL-time.Second)) || exp.After(issued.Add(defaultRoleTTL+5*time.Second)) {
		t.Errorf("expires-at annotation %q is not issue time + ttl", secret.Annotations[expiresAtAnnotation])
	}
	if len(secret.Data) != 0 || len(secret.StringData) != 0 {
		t.Error("bound Secret carries data; it must stay empty")
	}
}

// assertKubeconfig parses a kubeconfig the way kubectl does.
func assertKubeconfig(t *testing.T, raw, token string) {
	t.Helper()
	cfg, err := clientcmd.Load([]byte(raw))
	if err != nil {
		t.Fatalf("kubeconfig does not load: %v", err)
	}
	if cfg.CurrentContext != testCluster {
		t.Fatalf("current-context = %q", cfg.CurrentContext)
	}
	kctx := cfg.Contexts[cfg.CurrentContext]
	if kctx == nil || kctx.Namespace != testNamespace {
		t.Fatalf("context = %+v, want namespace %s", kctx, testNamespace)
	}
	cluster, user := cfg.Clusters[kctx.Cluster], cfg.AuthInfos[kctx.AuthInfo]
	if cluster == nil || user == nil {
		t.Fatalf("context points at missing cluster or user: %+v", kctx)
	}
	if cluster.Server != testHost || string(cluster.CertificateAuthorityData) != testCAPEM(t) {
		t.Errorf("cluster = %s with CA %q", cluster.Server, cluster.CertificateAuthorityData)
	}
	if cluster.InsecureSkipTLSVerify {
		t.Error("kubeconfig skips TLS verification")
	}
	if user.Token != token {
		t.Error("kubeconfig user does not carry the issued token")
	}
}

func mustJSON(t *testing.T, v interface{}) string {
	t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestCredsTTL(t *testing.T) {
	cases := []struct {
		name           string
		role           map[string]interface{}
		request        map[string]interface{}
		maxExpiry      time.Duration
		wantTTL        time.Duration
		wantExpSeconds int64
		wantWarning    string
	}{
		{name: "role default", wantTTL: 15 * time.Minute, wantExpSeconds: 930},
		{name: "request ttl", request: map[string]interface{}{"ttl": "30m"}, wantTTL: 30 * time.Minute, wantExpSeconds: 1830},
		{name: "request ttl in seconds", request: map[string]interface{}{"ttl": 120}, wantTTL: 2 * time.Minute, wantExpSeconds: 600},
		{name: "below the 10 minute token minimum", request: map[string]interface{}{"ttl": "1m"}, wantTTL: time.Minute, wantExpSeconds: 600},
		{name: "zero means the role default", request: map[string]interface{}{"ttl": "0"}, wantTTL: 15 * time.Minute, wantExpSeconds: 930},
		{name: "capped by max_ttl", request: map[string]interface{}{"ttl": "5h"}, wantTTL: time.Hour, wantExpSeconds: 3630, wantWarning: "max_ttl"},
		{name: "capped by the mount max", role: map[string]interface{}{"max_ttl": "48h"}, request: map[string]interface{}{"ttl": "30h"}, wantTTL: 24 * time.Hour, wantExpSeconds: 86430, wantWarning: "mount"},
		{name: "capped by a shortened token", request: map[string]interface{}{"ttl": "1h"}, maxExpiry: 20 * time.Minute, wantTTL: 20*time.Minute - tokenExpirySkew, wantExpSeconds: 3630, wantWarning: "shortened"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newTestBackend(t)
			configureCluster(t, b, s)
			configureRole(t, b, s, tc.role)
			fk.maxExpiry = tc.maxExpiry
			resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, tc.request)

			// Only a shortened token's lease may differ: it is cut to whole
			// seconds of the token's expiry, which the API server (here the
			// fake) stamps a second later when a second boundary passes.
			slack := time.Duration(0)
			if tc.maxExpiry > 0 {
				slack = 2 * time.Second
			}
			if d := tc.wantTTL - resp.Secret.TTL; d < -slack || d > slack {
				t.Errorf("lease TTL = %s, want %s", resp.Secret.TTL, tc.wantTTL)
			}
			if got := *fk.tokenRequests()[0].Spec.ExpirationSeconds; got != tc.wantExpSeconds {
				t.Errorf("expirationSeconds = %d, want %d", got, tc.wantExpSeconds)
			}
			expiresAt, _ := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
			claims, _ := parseTokenClaims(resp.Data["service_account_token"].(string))
			if !expiresAt.Before(time.Unix(claims.Exp, 0)) {
				t.Errorf("lease ends %s, not before the token's exp %s", expiresAt, time.Unix(claims.Exp, 0))
			}
			gotWarning := strings.Join(resp.Warnings, "\n")
			if tc.wantWarning == "" && gotWarning != "" {
				t.Errorf("unexpected warnings: %s", gotWarning)
			}
			if tc.wantWarning != "" && !strings.Contains(gotWarning, tc.wantWarning) {
				t.Errorf("warnings %q do not mention %q", gotWarning, tc.wantWarning)
			}
		})
	}
}

func TestCredsAudiences(t *testing.T) {
	b, s, fk := newTestBackend(t)
	configureCluster(t, b, s)
	configureRole(t, b, s, map[string]interface{}{"audiences": "https://kubernetes.default.svc,scanner"})

	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, map[string]interface{}{"audiences": "scanner"})
	trs := fk.tokenRequests()
	if got := strings.Join(trs[0].Spec.Audiences, ","); got != "https://kubernetes.default.svc,scanner" {
		t.Errorf("default audiences = %s", got)
	}
	if got := strings.Join(trs[1].Spec.Audiences, ","); got != "scanner" {
		t.Errorf("requested audiences = %s", got)
	}
}

func TestCredsWithoutJTI(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.noJTI = true
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if resp.Data["credential_id"] != "" {
		t.Errorf("credential_id = %v for a token without jti, want empty", resp.Data["credential_id"])
	}
}

func TestCredsKubeconfigOverrides(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureCluster(t, b, s)
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubeconfig_host":     "https://scanners.example.com:443",
		"tls_server_name":     "kubernetes.internal",
		"service_account_jwt": testRequesterJWT,
	})
	configureRole(t, b, s, map[string]interface{}{"kubeconfig_namespace": "scan-target"})
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	cfg, err := clientcmd.Load([]byte(resp.Data["kubeconfig"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	kctx := cfg.Contexts[cfg.CurrentContext]
	cluster := cfg.Clusters[kctx.Cluster]
	if cluster.Server != "https://scanners.example.com:443" || resp.Data["kubernetes_host"] != cluster.Server {
		t.Errorf("server = %s, kubernetes_host = %v", cluster.Server, resp.Data["kubernetes_host"])
	}
	if cluster.TLSServerName != "" {
		t.Errorf("tls-server-name %q leaked into a kubeconfig with its own host", cluster.TLSServerName)
	}
	if kctx.Namespace != "scan-target" {
		t.Errorf("namespace = %s, want scan-target", kctx.Namespace)
	}
}

// An audience is a grant: a role that lists none issues API-server tokens
// only, whatever the caller asks.
func TestCredsAudiencesNeedTheRole(t *testing.T) {
	for _, asked := range []string{"sts.amazonaws.com", "https://kubernetes.default.svc", "vault,sts.amazonaws.com"} {
		t.Run(asked, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			mustBadRequest(t, b, s, logical.ReadOperation, "creds/"+testRole, map[string]interface{}{"audiences": asked}, "lists no audiences")
			if n := len(fk.tokenRequests()); n != 0 || len(fk.managedSecrets(t)) != 0 {
				t.Errorf("a refused audience still made %d TokenRequests", n)
			}
		})
	}
	b, s, fk := newConfiguredBackend(t)
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if got := fk.tokenRequests()[0].Spec.Audiences; len(got) != 0 {
		t.Errorf("a role without audiences asked for %v, want the API server's own", got)
	}
}

// newAudienceBackend is newConfiguredBackend with the role limited to the
// audiences vault and api.
func newAudienceBackend(t *testing.T) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	b, s, fk := newConfiguredBackend(t)
	mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"audiences": "vault,api"})
	return b, s, fk
}

func TestCredsBadInput(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		data  map[string]interface{}
		setup func(t *testing.T, b *backend, s logical.Storage)
		want  string
	}{
		{name: "unknown role", path: "creds/no-such-role", want: `role "no-such-role" does not exist`},
		{name: "invalid role name", path: "creds/a..b", want: "role name"},
		{name: "negative ttl", data: map[string]interface{}{"ttl": "-5m"}, want: `field "ttl": cannot provide negative value`},
		{name: "negative ttl in seconds", data: map[string]interface{}{"ttl": "-1"}, want: `field "ttl"`},
		{name: "garbage ttl", data: map[string]interface{}{"ttl": "abc"}, want: `field "ttl"`},
		{name: "overflowing ttl", data: map[string]interface{}{"ttl": "10000000000000h"}, want: `field "ttl"`},
		{name: "audience outside the role's", data: map[string]interface{}{"audiences": "other"}, want: `audience "other" is not allowed by role "cluster-a"`},
		{name: "one audience outside the role's", data: map[string]interface{}{"audiences": []string{"vault", "https://kubernetes.default.svc"}}, want: `audience "https://kubernetes.default.svc" is not allowed`},
		{name: "duplicate audiences", data: map[string]interface{}{"audiences": "vault,vault"}, want: `audience "vault" is listed twice`},
		{name: "empty audience", data: map[string]interface{}{"audiences": "vault,,api"}, want: "must not contain an empty value"},
		{name: "unknown field", data: map[string]interface{}{"tll": "5m"}, want: "unknown field(s) tll"},
		{name: "unknown field among known", data: map[string]interface{}{"ttl": "5m", "namespace": "kube-system"}, want: "unknown field(s) namespace"},
		{
			name: "role's cluster missing from storage",
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				if err := s.Delete(context.Background(), clusterStoragePrefix+testCluster); err != nil {
					t.Fatal(err)
				}
				b.dropCachedClient(testCluster)
			},
			want: `uses cluster "cluster-a", which is not configured`,
		},
	}
	for _, tc := range tests {
		for _, op := range []logical.Operation{logical.ReadOperation, logical.UpdateOperation} {
			t.Run(string(op)+"/"+tc.name, func(t *testing.T) {
				b, s, fk := newAudienceBackend(t)
				if tc.setup != nil {
					tc.setup(t, b, s)
				}
				path := tc.path
				if path == "" {
					path = "creds/" + testRole
				}
				state := recordState(t, b, s, fk, "roles/"+testRole, "clusters/"+testCluster)
				mustBadRequest(t, b, s, op, path, tc.data, tc.want)
				state.check(t)
			})
		}
	}
}

// TestCredsBadInputControl shows the bad-input checks above can fail: the
// same setup with a valid request creates a Secret and a TokenRequest.
func TestCredsBadInputControl(t *testing.T) {
	for _, data := range []map[string]interface{}{nil, {"ttl": "5m", "audiences": "api"}} {
		b, s, fk := newAudienceBackend(t)
		before := storageSnapshot(t, s)
		mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, data)
		if n := len(fk.managedSecrets(t)); n != 1 {
			t.Fatalf("%d managed Secrets after a valid request, want 1", n)
		}
		if n := len(fk.tokenRequests()); n != 1 {
			t.Fatalf("%d TokenRequests after a valid request, want 1", n)
		}
		if got := fk.tokenRequests()[0].Spec.Audiences; data != nil && (len(got) != 1 || got[0] != "api") {
			t.Fatalf("audiences %v, want [api]", got)
		}
		// Issuing does not touch the role or cluster entries.
		after := storageSnapshot(t, s)
		for _, k := range []string{"roles/" + testRole, "clusters/" + testCluster} {
			if before[k] != after[k] {
				t.Fatalf("%s changed by issuing", k)
			}
		}
	}
}

// terraformBody is what Terraform's vault_kubernetes_service_account_token
// data source writes to creds/<role>: kubernetes_namespace (required),
// cluster_role_binding (false when unset) and ttl ("" when unset).
func terraformBody(namespace string, clusterRoleBinding bool, ttl string) map[string]interface{} {
	return map[string]interface{}{"kubernetes_namespace": namespace, "cluster_role_binding": clusterRoleBinding, "ttl": ttl}
}

// Terraform's exact request, in every mode: values that restate the role
// issue as a plain read would; values that would change what is issued get
// a 400 that creates nothing.
func TestCredsTerraformRequest(t *testing.T) {
	existingSA := func(t *testing.T) (*backend, logical.Storage, *fakeKube, string) {
		b, s, fk := newConfiguredBackend(t)
		return b, s, fk, testRole
	}
	ephemeral := func(fields map[string]interface{}) func(*testing.T) (*backend, logical.Storage, *fakeKube, string) {
		return func(t *testing.T) (*backend, logical.Storage, *fakeKube, string) {
			b, s, fk := ephemeralBackend(t, fields)
			return b, s, fk, "eph"
		}
	}
	targets := func(t *testing.T) (*backend, logical.Storage, *fakeKube, string) {
		b, s, fk := targetBackend(t, map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a"})
		return b, s, fk, "scan"
	}
	cases := []struct {
		name  string
		setup func(*testing.T) (*backend, logical.Storage, *fakeKube, string)
		body  map[string]interface{}
		// wantErr is the 400's text; "" means the request issues.
		wantErr string
		// wantNS is the issued service account's namespace.
		wantNS string
		// wantKind is the binding kind an ephemeral lease gets.
		wantKind string
	}{
		{name: "existing account, its own namespace", setup: existingSA, body: terraformBody(testNamespace, false, ""), wantNS: testNamespace},
		{name: "existing account, a ttl", setup: existingSA, body: terraformBody(testNamespace, false, "5m"), wantNS: testNamespace},
		{name: "existing account, another namespace", setup: existingSA, body: terraformBody("team-a", false, ""), wantErr: `may only restate "scanner-namespace"`},
		{name: "existing account, the namespace in other case", setup: existingSA, body: terraformBody("Scanner-Namespace", false, ""), wantErr: `may only restate "scanner-namespace"`},
		{name: "existing account, the namespace with a space", setup: existingSA, body: terraformBody(testNamespace+" ", false, ""), wantErr: `may only restate "scanner-namespace"`},
		{name: "existing account, cluster_role_binding=true", setup: existingSA, body: terraformBody(testNamespace, true, ""), wantErr: "cluster_role_binding=true does not apply"},
		{name: "existing account, kubernetes_namespaces", setup: existingSA, body: map[string]interface{}{"kubernetes_namespaces": testNamespace}, wantErr: "kubernetes_namespaces does not apply"},
		{name: "existing Role, an allowed namespace", setup: ephemeral(map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a,team-b"}), body: terraformBody("team-b", false, ""), wantNS: "team-b", wantKind: kindRoleBinding},
		{name: "existing Role, a namespace not allowed", setup: ephemeral(map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"}), body: terraformBody("team-b", false, ""), wantErr: `namespace "team-b" is not allowed`},
		{name: "existing Role, cluster_role_binding=true", setup: ephemeral(map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"}), body: terraformBody("team-a", true, ""), wantErr: "not allowed by this role"},
		{name: "generated rules", setup: ephemeral(map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "*"}), body: terraformBody("team-a", false, ""), wantNS: "team-a", wantKind: kindRoleBinding},
		{name: "ClusterRole that allows a cluster-wide binding, false", setup: ephemeral(map[string]interface{}{"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "team-a", "allow_cluster_role_binding": true}), body: terraformBody("team-a", false, ""), wantNS: "team-a", wantKind: kindRoleBinding},
		{name: "ClusterRole that allows a cluster-wide binding, true", setup: ephemeral(map[string]interface{}{"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "team-a", "allow_cluster_role_binding": true}), body: terraformBody("team-a", true, ""), wantNS: "team-a", wantKind: kindClusterRoleBinding},
		{name: "scoped to targets: Terraform cannot name them", setup: targets, body: terraformBody("team-a", false, ""), wantErr: "name the pods to scan"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk, role := tc.setup(t)
			if tc.wantErr != "" {
				mustBadRequest(t, b, s, logical.UpdateOperation, "creds/"+role, tc.body, tc.wantErr)
				if left := leaseKubeObjects(t, fk); len(left) != 0 || len(fk.tokenRequests()) != 0 || len(walEntries(t, s)) != 0 {
					t.Errorf("a refused request created %v, %d TokenRequests, %d WAL entries", left, len(fk.tokenRequests()), len(walEntries(t, s)))
				}
				return
			}
			resp := mustOK(t, b, s, logical.UpdateOperation, "creds/"+role, tc.body)
			if got := resp.Data["service_account_namespace"]; got != tc.wantNS {
				t.Errorf("service_account_namespace = %v, want %s", got, tc.wantNS)
			}
			// Terraform reads these three fields and the lease.
			for _, k := range []string{"service_account_name", "service_account_namespace", "service_account_token"} {
				if v, _ := resp.Data[k].(string); v == "" {
					t.Errorf("response field %s is empty", k)
				}
			}
			wantTTL := defaultRoleTTL
			if tc.body["ttl"] == "5m" {
				wantTTL = 5 * time.Minute
			}
			if resp.Secret == nil || resp.Secret.TTL != wantTTL {
				t.Errorf("lease %+v, want TTL %s (an empty ttl is the role's)", resp.Secret, wantTTL)
			}
			if tc.wantKind != "" {
				if n := leaseKubeObjects(t, fk)[tc.wantKind]; n != 1 {
					t.Errorf("%s objects = %d, want 1 (objects %v)", tc.wantKind, n, leaseKubeObjects(t, fk))
				}
			}
		})
	}
}
