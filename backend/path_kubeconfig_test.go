package backend

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/pkg/apis/clientauthentication"
	clientauthinstall "k8s.io/client-go/pkg/apis/clientauthentication/install"
	clientauthenticationv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// decodeExecCredential decodes a credential plugin's output the way
// client-go's exec authenticator does: by the v1 group version through a
// scheme that knows the clientauthentication types.
func decodeExecCredential(t *testing.T, out string) *clientauthentication.ExecCredential {
	t.Helper()
	scheme := runtime.NewScheme()
	clientauthinstall.Install(scheme)
	codecs := serializer.NewCodecFactory(scheme)
	ec := &clientauthentication.ExecCredential{}
	_, gvk, err := codecs.UniversalDecoder(clientauthenticationv1.SchemeGroupVersion).Decode([]byte(out), nil, ec)
	if err != nil {
		t.Fatalf("exec_credential does not decode: %v", err)
	}
	if gvk.GroupVersion() != clientauthenticationv1.SchemeGroupVersion || gvk.Kind != "ExecCredential" {
		t.Fatalf("exec_credential is %s, want client.authentication.k8s.io/v1 ExecCredential", gvk)
	}
	if ec.Status == nil {
		t.Fatal("exec_credential has no status")
	}
	return ec
}

func TestCredsExecCredential(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, map[string]interface{}{"ttl": "2m"})
	raw, ok := resp.Data["exec_credential"].(string)
	if !ok || raw == "" {
		t.Fatalf("no exec_credential in %v", keysOf(resp.Data))
	}
	if strings.Contains(raw, "\n") {
		t.Error("exec_credential spans several lines")
	}
	// Strictly as the v1 wire type: no field outside it.
	var wire clientauthenticationv1.ExecCredential
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wire); err != nil {
		t.Fatalf("exec_credential is not a v1 ExecCredential: %v", err)
	}
	if wire.APIVersion != "client.authentication.k8s.io/v1" || wire.Kind != "ExecCredential" {
		t.Errorf("apiVersion/kind = %s/%s", wire.APIVersion, wire.Kind)
	}

	ec := decodeExecCredential(t, raw)
	if ec.Status.Token != resp.Data["service_account_token"] {
		t.Error("status.token is not the issued token")
	}
	if ec.Status.ClientCertificateData != "" || ec.Status.ClientKeyData != "" {
		t.Error("status carries a client certificate")
	}
	expiresAt, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if ec.Status.ExpirationTimestamp == nil || !ec.Status.ExpirationTimestamp.Time.Equal(expiresAt) {
		t.Errorf("status.expirationTimestamp = %v, want the lease's end %s", ec.Status.ExpirationTimestamp, expiresAt)
	}
	// The lease's end, not the token's (at least 10 minutes here).
	if d := time.Until(expiresAt); d > 2*time.Minute || d < 2*time.Minute-5*time.Second {
		t.Errorf("expirationTimestamp is %s away, want the 2m lease", d)
	}
}

func keysOf(m map[string]interface{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// kubeconfigRequest reads kubeconfig/<role> as Vault would route it
// through the mount at mount.
func kubeconfigRequest(t *testing.T, b *backend, s logical.Storage, mount, role string, data map[string]interface{}) (*logical.Response, error) {
	t.Helper()
	return b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.ReadOperation, Path: "kubeconfig/" + role, Storage: s, Data: data,
		MountPoint: mount, ID: uuid.NewString(),
	})
}

func mustKubeconfig(t *testing.T, b *backend, s logical.Storage, mount, role string, data map[string]interface{}) *logical.Response {
	t.Helper()
	resp, err := kubeconfigRequest(t, b, s, mount, role, data)
	if err != nil || resp == nil || resp.IsError() {
		t.Fatalf("kubeconfig/%s %v: %v %v", role, data, err, resp)
	}
	return resp
}

// loadExecKubeconfig loads a kubeconfig/ answer with kubectl's loader and
// returns its one context's cluster, user and namespace.
func loadExecKubeconfig(t *testing.T, raw string) (*clientcmdapi.Config, *clientcmdapi.Cluster, *clientcmdapi.AuthInfo, string) {
	t.Helper()
	cfg, err := clientcmd.Load([]byte(raw))
	if err != nil {
		t.Fatalf("clientcmd.Load: %v", err)
	}
	kctx := cfg.Contexts[cfg.CurrentContext]
	if kctx == nil || len(cfg.Contexts) != 1 || len(cfg.Clusters) != 1 || len(cfg.AuthInfos) != 1 {
		t.Fatalf("want one context (current), cluster and user: %+v", cfg)
	}
	cluster, user := cfg.Clusters[kctx.Cluster], cfg.AuthInfos[kctx.AuthInfo]
	if cluster == nil || user == nil {
		t.Fatalf("context %+v names a missing cluster or user", kctx)
	}
	return cfg, cluster, user, kctx.Namespace
}

func TestKubeconfigPath(t *testing.T) {
	b, s, fk := newTestBackend(t)
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host":     testHost,
		"kubernetes_ca_cert":  testCAPEM(t),
		"service_account_jwt": testRequesterJWT,
		"tls_server_name":     "api.internal",
	})
	configureRole(t, b, s, map[string]interface{}{"max_ttl": "30m"})
	fk.clientset.ClearActions()
	built := fk.built.Load()

	vaultRootNS := []clientcmdapi.ExecEnvVar{{Name: "VAULT_NAMESPACE", Value: ""}}
	cases := []struct {
		name, mount string
		data        map[string]interface{}
		wantArgs    []string
		wantWarning string
		// wantCommand and wantEnv: "" and nil mean vault in the root namespace.
		wantCommand string
		wantEnv     []clientcmdapi.ExecEnvVar
	}{
		{name: "defaults", mount: "scanner/", wantArgs: []string{"read", "-format=table", "-field=exec_credential", "scanner/creds/cluster-a"}},
		{name: "other mount, ttl", mount: "team/k8s/", data: map[string]interface{}{"ttl": "10m"}, wantArgs: []string{"read", "-format=table", "-field=exec_credential", "team/k8s/creds/cluster-a", "ttl=10m0s"}},
		{name: "ttl in seconds", mount: "scanner/", data: map[string]interface{}{"ttl": 90}, wantArgs: []string{"read", "-format=table", "-field=exec_credential", "scanner/creds/cluster-a", "ttl=1m30s"}},
		{name: "ttl above max_ttl", mount: "scanner/", data: map[string]interface{}{"ttl": "2h"}, wantArgs: []string{"read", "-format=table", "-field=exec_credential", "scanner/creds/cluster-a", "ttl=2h0m0s"}, wantWarning: "above the role's max_ttl"},
		{name: "bao", mount: "scanner/", data: map[string]interface{}{"exec_command": "bao"}, wantArgs: []string{"read", "-format=table", "-field=exec_credential", "scanner/creds/cluster-a"}, wantCommand: "bao", wantEnv: []clientcmdapi.ExecEnvVar{{Name: "BAO_NAMESPACE", Value: ""}, {Name: "VAULT_NAMESPACE", Value: ""}}},
		{name: "mount in a namespace", mount: "team/k8s/", data: map[string]interface{}{"vault_namespace": "team"}, wantArgs: []string{"read", "-format=table", "-field=exec_credential", "k8s/creds/cluster-a"}, wantEnv: []clientcmdapi.ExecEnvVar{{Name: "VAULT_NAMESPACE", Value: "team"}}},
		{name: "mount in a child namespace, bao", mount: "team/ci/k8s/", data: map[string]interface{}{"vault_namespace": "/team/ci/", "exec_command": "bao"}, wantArgs: []string{"read", "-format=table", "-field=exec_credential", "k8s/creds/cluster-a"}, wantCommand: "bao", wantEnv: []clientcmdapi.ExecEnvVar{{Name: "BAO_NAMESPACE", Value: "team/ci"}, {Name: "VAULT_NAMESPACE", Value: "team/ci"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := mustKubeconfig(t, b, s, tc.mount, testRole, tc.data)
			if resp.Secret != nil {
				t.Error("kubeconfig/ returned a lease")
			}
			if got := keysOf(resp.Data); !slices.Equal(got, []string{"kubeconfig", "kubeconfig_json"}) {
				t.Errorf("fields = %v", got)
			}
			warnings := strings.Join(resp.Warnings, "; ")
			if (tc.wantWarning == "") != (warnings == "") || !strings.Contains(warnings, tc.wantWarning) {
				t.Errorf("warnings %q, want %q", warnings, tc.wantWarning)
			}
			jsonOut := resp.Data["kubeconfig_json"].(string)
			if strings.Contains(jsonOut, "\n") || !json.Valid([]byte(jsonOut)) {
				t.Error("kubeconfig_json is not single-line JSON")
			}
			for form, raw := range map[string]string{"yaml": resp.Data["kubeconfig"].(string), "json": jsonOut} {
				t.Run(form, func(t *testing.T) {
					assertNoSecretIn(t, raw, "")
					if strings.Contains(raw, "eyJ") || strings.Contains(strings.ToLower(raw), "token:") {
						t.Errorf("kubeconfig holds something like a token: %s", raw)
					}
					cfg, cluster, user, ns := loadExecKubeconfig(t, raw)
					if cluster.Server != testHost || cluster.TLSServerName != "api.internal" || string(cluster.CertificateAuthorityData) != testCAPEM(t) {
						t.Errorf("cluster = server %s, tls-server-name %s", cluster.Server, cluster.TLSServerName)
					}
					if ns != testNamespace {
						t.Errorf("context namespace = %q, want %q", ns, testNamespace)
					}
					if user.Token != "" || user.TokenFile != "" || len(user.ClientKeyData) != 0 || user.Exec == nil {
						t.Fatalf("user must authenticate by exec only: %+v", user)
					}
					ex := user.Exec
					wantCommand, wantEnv := cmp.Or(tc.wantCommand, "vault"), tc.wantEnv
					if wantEnv == nil {
						wantEnv = vaultRootNS
					}
					if ex.APIVersion != "client.authentication.k8s.io/v1" || ex.Command != wantCommand ||
						ex.InteractiveMode != clientcmdapi.NeverExecInteractiveMode || ex.ProvideClusterInfo {
						t.Errorf("exec = %+v, want command %s", ex, wantCommand)
					}
					if !slices.Equal(ex.Env, wantEnv) {
						t.Errorf("exec env = %+v, want %+v", ex.Env, wantEnv)
					}
					addrVar := map[string]string{"vault": "VAULT_ADDR", "bao": "BAO_ADDR"}[wantCommand]
					if !strings.Contains(ex.InstallHint, addrVar) || !strings.Contains(ex.InstallHint, wantCommand+" CLI") {
						t.Errorf("install hint %q does not name the %s CLI and %s", ex.InstallHint, wantCommand, addrVar)
					}
					if !slices.Equal(ex.Args, tc.wantArgs) {
						t.Errorf("exec args = %q, want %q", ex.Args, tc.wantArgs)
					}
					// kubectl's own client builder takes it as an exec provider.
					rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
					if err != nil {
						t.Fatal(err)
					}
					if rc.ExecProvider == nil || rc.BearerToken != "" || rc.Host != testHost || rc.Insecure {
						t.Errorf("rest config: exec %v, host %s", rc.ExecProvider, rc.Host)
					}
				})
			}
		})
	}
	if acts := fk.clientset.Actions(); len(acts) != 0 {
		t.Errorf("kubeconfig/ called the API server: %v", acts)
	}
	if len(fk.tokenRequests()) != 0 || len(fk.managedSecrets(t)) != 0 {
		t.Error("kubeconfig/ issued a credential")
	}
	if got := fk.built.Load(); got > built+1 {
		t.Errorf("%d clients built for one cluster", got-built)
	}

	t.Run("kubeconfig_host", func(t *testing.T) {
		// As in issued kubeconfigs: the users' address, without the TLS
		// server name Vault needs.
		mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubeconfig_host": "https://k8s.example.com:6443"})
		_, cluster, _, _ := loadExecKubeconfig(t, mustKubeconfig(t, b, s, "scanner/", testRole, nil).Data["kubeconfig"].(string))
		if cluster.Server != "https://k8s.example.com:6443" || cluster.TLSServerName != "" {
			t.Errorf("cluster = server %s, tls-server-name %q", cluster.Server, cluster.TLSServerName)
		}
	})
	t.Run("kubeconfig_namespace", func(t *testing.T) {
		configureRole(t, b, s, map[string]interface{}{"kubeconfig_namespace": "elsewhere"})
		_, _, _, ns := loadExecKubeconfig(t, mustKubeconfig(t, b, s, "scanner/", testRole, nil).Data["kubeconfig"].(string))
		if ns != "elsewhere" {
			t.Errorf("context namespace = %q, want the role's kubeconfig_namespace", ns)
		}
	})
}

func TestKubeconfigPathEphemeral(t *testing.T) {
	roles := map[string]map[string]interface{}{
		"one":      {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"},
		"two":      {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a,team-b"},
		"any":      {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "*"},
		"selector": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespace_selector": `{"matchLabels":{"team":"a"}}`},
	}
	cases := []struct {
		name, role, wantNS string
		data               map[string]interface{}
		wantExtra          []string
		wantWarning        string
	}{
		{"single allowed namespace", "one", "team-a", nil, nil, ""},
		{"single allowed, asked", "one", "team-a", map[string]interface{}{"kubernetes_namespace": "team-a"}, []string{"kubernetes_namespace=team-a"}, ""},
		{"one of two", "two", "team-b", map[string]interface{}{"kubernetes_namespace": "team-b", "ttl": "5m"}, []string{"ttl=5m0s", "kubernetes_namespace=team-b"}, ""},
		{"any namespace", "any", "team-z", map[string]interface{}{"kubernetes_namespace": "team-z"}, []string{"kubernetes_namespace=team-z"}, ""},
		// The selector needs the namespace's labels: checked by creds.
		{"selector", "selector", "team-b", map[string]interface{}{"kubernetes_namespace": "team-b"}, []string{"kubernetes_namespace=team-b"}, "checked when credentials are issued"},
		// Several namespaces: passed on, the context uses the first.
		{"several namespaces", "two", "team-b", map[string]interface{}{"kubernetes_namespaces": "team-b,team-a"}, []string{"kubernetes_namespaces=team-b,team-a"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := ephemeralBackend(t, roles[tc.role])
			fk.clientset.ClearActions()
			resp := mustKubeconfig(t, b, s, "scanner/", "eph", tc.data)
			_, _, user, ns := loadExecKubeconfig(t, resp.Data["kubeconfig"].(string))
			if ns != tc.wantNS {
				t.Errorf("context namespace = %q, want %q", ns, tc.wantNS)
			}
			want := append([]string{"read", "-format=table", "-field=exec_credential", "scanner/creds/eph"}, tc.wantExtra...)
			if !slices.Equal(user.Exec.Args, want) {
				t.Errorf("exec args = %q, want %q", user.Exec.Args, want)
			}
			if w := strings.Join(resp.Warnings, "; "); (tc.wantWarning == "") != (w == "") || !strings.Contains(w, tc.wantWarning) {
				t.Errorf("warnings %q, want %q", w, tc.wantWarning)
			}
			if acts := fk.clientset.Actions(); len(acts) != 0 {
				t.Errorf("kubeconfig/ called the API server: %v", acts)
			}
		})
	}
}

func TestKubeconfigPathBadInput(t *testing.T) {
	cases := []struct {
		name, role string
		ephemeral  map[string]interface{}
		data       map[string]interface{}
		setup      func(*testing.T, *backend, logical.Storage)
		want       string
	}{
		{name: "unknown role", role: "no-such-role", want: `role "no-such-role" does not exist`},
		{name: "invalid role name", role: "a..b", want: "role name"},
		{name: "negative ttl", data: map[string]interface{}{"ttl": "-5m"}, want: `field "ttl"`},
		{name: "garbage ttl", data: map[string]interface{}{"ttl": "abc"}, want: `field "ttl"`},
		{name: "audiences are not for a kubeconfig", data: map[string]interface{}{"audiences": "vault"}, want: "unknown field(s) audiences"},
		{name: "unknown field", data: map[string]interface{}{"tll": "5m"}, want: "unknown field(s) tll"},
		{name: "namespace on a service-account role", data: map[string]interface{}{"kubernetes_namespace": "team-a"}, want: `may only restate "scanner-namespace"`},
		{
			name: "role's cluster missing", want: `uses cluster "cluster-a", which is not configured`,
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				if err := s.Delete(context.Background(), clusterStoragePrefix+testCluster); err != nil {
					t.Fatal(err)
				}
				b.dropCachedClient(testCluster)
			},
		},
		{name: "ephemeral, namespace outside the list", role: "eph", ephemeral: map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"}, data: map[string]interface{}{"kubernetes_namespace": "team-b"}, want: `namespace "team-b" is not allowed`},
		{name: "ephemeral, namespace needed", role: "eph", ephemeral: map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a,team-b"}, want: "needs kubernetes_namespace"},
		{name: "ephemeral, invalid namespace", role: "eph", ephemeral: map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "*"}, data: map[string]interface{}{"kubernetes_namespace": "Team_A"}, want: "not a valid Kubernetes namespace name"},
		{name: "ephemeral, one of several namespaces outside the list", role: "eph", ephemeral: map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"}, data: map[string]interface{}{"kubernetes_namespaces": "team-a,team-b"}, want: `namespace "team-b" is not allowed`},
		{name: "ephemeral, duplicate namespaces", role: "eph", ephemeral: map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "*"}, data: map[string]interface{}{"kubernetes_namespaces": "team-a,team-a"}, want: "more than once"},
		{name: "ephemeral, both namespace parameters", role: "eph", ephemeral: map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "*"}, data: map[string]interface{}{"kubernetes_namespaces": "team-a", "kubernetes_namespace": "team-a"}, want: "not both"},
		{name: "a shell as the command", data: map[string]interface{}{"exec_command": "sh"}, want: `exec_command must be "vault" or "bao"`},
		{name: "a path as the command", data: map[string]interface{}{"exec_command": "/usr/bin/vault"}, want: "only be set by the cluster entry"},
		{name: "a planted vault", data: map[string]interface{}{"exec_command": "/tmp/vault"}, want: "only be set by the cluster entry"},
		{name: "a namespace the mount is not in", data: map[string]interface{}{"vault_namespace": "other"}, want: `not a namespace this mount lives in: its path from the root namespace is "scanner/"`},
		{name: "the mount itself as the namespace", data: map[string]interface{}{"vault_namespace": "scanner"}, want: "not a namespace this mount lives in"},
		{name: "a namespace with a traversal", data: map[string]interface{}{"vault_namespace": "../scanner"}, want: "must be a namespace path"},
		{name: "a namespace with a newline", data: map[string]interface{}{"vault_namespace": "team\nx"}, want: "must be a namespace path"},
		{name: "ephemeral, selector without a namespace", role: "eph", ephemeral: map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespace_selector": "team=a"}, want: "needs kubernetes_namespace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var (
				b  *backend
				s  logical.Storage
				fk *fakeKube
			)
			if tc.ephemeral != nil {
				b, s, fk = ephemeralBackend(t, tc.ephemeral)
			} else {
				b, s, fk = newConfiguredBackend(t)
			}
			if tc.setup != nil {
				tc.setup(t, b, s)
			}
			role := tc.role
			if role == "" {
				role = testRole
			}
			fk.clientset.ClearActions()
			resp, err := kubeconfigRequest(t, b, s, "scanner/", role, tc.data)
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("want a 400, got %v %#v", err, resp)
			}
			if msg := resp.Error().Error(); !containsFold(msg, tc.want) {
				t.Errorf("error %q does not mention %q", msg, tc.want)
			}
			if acts := fk.clientset.Actions(); len(acts) != 0 {
				t.Errorf("a refused kubeconfig/ called the API server: %v", acts)
			}
		})
	}
}

func TestSplitMountNamespace(t *testing.T) {
	cases := []struct {
		mount, requested, wantNS, wantPath, wantErr string
	}{
		{mount: "scanner/", wantPath: "scanner/"},
		{mount: "team/scanner/", wantPath: "team/scanner/"},
		{mount: "team/scanner/", requested: "team", wantNS: "team", wantPath: "scanner/"},
		{mount: "team/scanner/", requested: "team/", wantNS: "team", wantPath: "scanner/"},
		{mount: "team/ci/scanner/", requested: "team", wantNS: "team", wantPath: "ci/scanner/"},
		{mount: "team/ci/scanner/", requested: "team/ci", wantNS: "team/ci", wantPath: "scanner/"},
		{mount: "team/scanner/", requested: "tea", wantErr: "not a namespace this mount lives in"},
		{mount: "team/scanner/", requested: "team/scanner", wantErr: "not a namespace this mount lives in"},
		{mount: "team/scanner/", requested: "team//x", wantErr: "must be a namespace path"},
		{mount: "team/scanner/", requested: "team/../team", wantErr: "must be a namespace path"},
		{mount: "a/scanner/", requested: strings.Repeat("a/", 200) + "a", wantErr: "must be a namespace path"},
	}
	for _, tc := range cases {
		t.Run(tc.mount+" "+tc.requested, func(t *testing.T) {
			ns, path, err := splitMountNamespace(tc.mount, tc.requested)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || ns != tc.wantNS || path != tc.wantPath {
				t.Fatalf("got %q %q %v, want %q %q", ns, path, err, tc.wantNS, tc.wantPath)
			}
		})
	}
}

// The command comes from the request (vault or bao), else from the
// cluster entry (which may name an absolute path), else vault; the
// environment variable names follow the command.
func TestKubeconfigExecCommandSources(t *testing.T) {
	cases := []struct {
		name, clusterCommand string
		data                 map[string]interface{}
		wantCommand, wantEnv string
	}{
		{name: "default", wantCommand: "vault", wantEnv: "VAULT_NAMESPACE"},
		{name: "cluster names bao", clusterCommand: "bao", wantCommand: "bao", wantEnv: "BAO_NAMESPACE"},
		{name: "cluster names a path", clusterCommand: "/opt/openbao/bin/bao", wantCommand: "/opt/openbao/bin/bao", wantEnv: "BAO_NAMESPACE"},
		{name: "request overrides the cluster", clusterCommand: "/opt/openbao/bin/bao", data: map[string]interface{}{"exec_command": "vault"}, wantCommand: "vault", wantEnv: "VAULT_NAMESPACE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			if tc.clusterCommand != "" {
				mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubeconfig_exec_command": tc.clusterCommand})
			}
			_, _, user, _ := loadExecKubeconfig(t, mustKubeconfig(t, b, s, "scanner/", testRole, tc.data).Data["kubeconfig"].(string))
			if user.Exec.Command != tc.wantCommand || len(user.Exec.Env) == 0 || user.Exec.Env[0].Name != tc.wantEnv {
				t.Errorf("exec command %q env %+v, want %q and %s", user.Exec.Command, user.Exec.Env, tc.wantCommand, tc.wantEnv)
			}
		})
	}
	t.Run("a changed cluster command applies to the next read (the cached client is rebuilt)", func(t *testing.T) {
		b, s, _ := newConfiguredBackend(t)
		command := func() string {
			_, _, user, _ := loadExecKubeconfig(t, mustKubeconfig(t, b, s, "scanner/", testRole, nil).Data["kubeconfig"].(string))
			return user.Exec.Command
		}
		if got := command(); got != "vault" {
			t.Fatalf("exec command %q before the change, want vault", got)
		}
		mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubeconfig_exec_command": "bao"})
		if got := command(); got != "bao" {
			t.Errorf("exec command %q after the cluster named bao", got)
		}
	})
	t.Run("a stored entry naming another program is refused", func(t *testing.T) {
		b, s, _ := newConfiguredBackend(t)
		cfg, err := getCluster(context.Background(), s, testCluster)
		if err != nil {
			t.Fatal(err)
		}
		cfg.KubeconfigExecCommand = "/bin/sh"
		entry, err := logical.StorageEntryJSON(clusterStoragePrefix+testCluster, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(context.Background(), entry); err != nil {
			t.Fatal(err)
		}
		resp, err := kubeconfigRequest(t, b, s, "scanner/", testRole, nil)
		if err == nil && resp != nil && !resp.IsError() {
			t.Fatalf("a kubeconfig running /bin/sh was returned: %v", resp.Data["kubeconfig"])
		}
	})
}
