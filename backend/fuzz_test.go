package backend

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
)

// FuzzRoleWrite: any role input is either stored valid or refused with a
// 400; never an internal error, a panic, or a call to Kubernetes.
func FuzzRoleWrite(f *testing.F) {
	f.Add("cluster-a", "scanner-sa", "scanner-namespace", "15m", "1h", "aud1,aud2", "team=a", "note=x")
	f.Add("../etc", "Scanner_SA", "kube.system", "-5m", "abc", ",", "app.kubernetes.io/managed-by=me", "vault-plugin-scanner/role=x")
	f.Add("cluster-a", strings.Repeat("a", 300), "ns", "1000000h", "0", "a,a", "=", "k=")
	f.Add("clüster", "sa", "ns", "1", "2", "", "a/b/c=d", "x=\x00")
	f.Add("cluster-a", "sa", "ns", "1m", "2m", "a", "rbac.authorization.k8s.io/aggregate-to-admin=true", "Kubernetes.IO/x=y")
	f.Fuzz(func(t *testing.T, cluster, sa, ns, ttl, maxTTL, audiences, labels, annotations string) {
		b, s, fk := newTestBackend(t)
		configureCluster(t, b, s)
		resp, err := request(t, b, s, logical.CreateOperation, "roles/fuzz", map[string]interface{}{
			"cluster": cluster, "service_account_name": sa, "service_account_namespace": ns,
			"ttl": ttl, "max_ttl": maxTTL, "audiences": audiences,
			"extra_labels": labels, "extra_annotations": annotations,
		})
		if err != nil {
			t.Fatalf("internal error for user input: %v", err)
		}
		if n := len(fk.tokenRequests()); n != 0 {
			t.Fatalf("a role write called TokenRequest %d times", n)
		}
		if resp != nil && resp.IsError() {
			return
		}
		role, err := getRole(t.Context(), s, "fuzz")
		if err != nil || role == nil {
			t.Fatalf("accepted role not stored: %v", err)
		}
		if len(validation.IsDNS1123Subdomain(role.ServiceAccountName)) > 0 || len(validation.IsDNS1123Label(role.ServiceAccountNamespace)) > 0 {
			t.Fatalf("invalid Kubernetes names stored: %q %q", role.ServiceAccountName, role.ServiceAccountNamespace)
		}
		if role.TTL <= 0 || role.TTL > role.MaxTTL || role.MaxTTL > maxRoleMaxTTL {
			t.Fatalf("invalid TTLs stored: %s %s", role.TTL, role.MaxTTL)
		}
		for _, m := range []map[string]string{role.ExtraLabels, role.ExtraAnnotations} {
			for k := range m {
				if why := reservedKey(k); why != "" {
					t.Fatalf("stored key %q is %s", k, why)
				}
			}
		}
	})
}

// FuzzClusterWrite: any cluster input is stored only if https and well
// formed, and the JWT never appears in an error or a read.
func FuzzClusterWrite(f *testing.F) {
	f.Add("https://127.0.0.1:6443", "ca", "a.b.c", "", "")
	f.Add("http://127.0.0.1:8080", "-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----\n", "not-a-jwt", "ftp://proxy", "bad name")
	f.Add("https://user:pw@host?x=1#y", "", "x.y.z", "socks5://127.0.0.1:1080", "kubernetes.default")
	f.Add("", "", "", "", "")
	f.Add("https://127.0.0.1:6443\u0085", "ca", "a.b.c", "http://user:pw@[bad", "api\u009f.local")
	f.Add("https://admin:pw@[bad", "ca", "a.b.c", "http:user:pw@proxy", "")
	f.Fuzz(func(t *testing.T, host, ca, jwt, proxy, serverName string) {
		b, s, _ := newTestBackend(t)
		data := map[string]interface{}{"kubernetes_host": host, "service_account_jwt": jwt, "proxy_url": proxy, "tls_server_name": serverName}
		if ca == "ca" {
			ca = testCAPEM(t)
		}
		data["kubernetes_ca_cert"] = ca
		resp, err := request(t, b, s, logical.CreateOperation, "clusters/fuzz", data)
		if err != nil {
			t.Fatalf("internal error for user input: %v", err)
		}
		if resp != nil && resp.IsError() {
			if len(jwt) >= 8 && strings.Contains(resp.Error().Error(), jwt) {
				t.Fatal("error message echoes the JWT")
			}
			return
		}
		cfg, err := getCluster(t.Context(), s, "fuzz")
		if err != nil || cfg == nil {
			t.Fatalf("accepted cluster not stored: %v", err)
		}
		if cfg.Host != "" && (!strings.HasPrefix(cfg.Host, "https://") || cfg.JWT == "") {
			t.Fatalf("stored host %q without https or JWT", cfg.Host)
		}
		read := mustOK(t, b, s, logical.ReadOperation, "clusters/fuzz", nil)
		out, _ := json.Marshal(read.Data)
		if len(cfg.JWT) >= 8 && strings.Contains(string(out), cfg.JWT) {
			t.Fatal("cluster read returns the JWT")
		}
	})
}

// FuzzBuildKubeconfig: whatever the strings, both encodings load back to
// the same values.
func FuzzBuildKubeconfig(f *testing.F) {
	f.Add("cluster-a", "https://127.0.0.1:6443", "scanner-sa", "a.b.c", "scanner-namespace")
	f.Add("c: d", "https://[::1]:6443/path?x", "user\nname", "tok\"en", "ns'")
	f.Fuzz(func(t *testing.T, cluster, server, user, token, ns string) {
		for _, s := range []string{cluster, server, user, token, ns} {
			if !utf8.ValidString(s) {
				return
			}
		}
		if cluster == "" || user == "" {
			return
		}
		yamlOut, jsonOut, err := buildKubeconfig(kubeconfigParams{ClusterName: cluster, Server: server, UserName: user, Token: token, Namespace: ns})
		if err != nil {
			// YAML cannot carry control characters; the plugin's inputs
			// (validated names, URLs, JWTs) never contain them.
			if !strings.ContainsFunc(cluster+server+user+token+ns, unicode.IsControl) {
				t.Fatal(err)
			}
			return
		}
		for _, raw := range []string{yamlOut, jsonOut} {
			cfg, err := clientcmd.Load([]byte(raw))
			if err != nil {
				t.Fatalf("kubeconfig does not load: %v\n%s", err, raw)
			}
			kctx := cfg.Contexts[cfg.CurrentContext]
			if cfg.CurrentContext != cluster || kctx == nil || kctx.Namespace != ns || cfg.AuthInfos[user].Token != token || cfg.Clusters[cluster].Server != server {
				t.Fatalf("round trip changed the kubeconfig:\n%s", raw)
			}
		}
		if strings.Contains(jsonOut, "\n") {
			t.Fatal("JSON kubeconfig spans lines")
		}
	})
}

// FuzzTargets: whatever a roles/ writer puts in target_rules and a creds/
// caller in targets and target_selector, a stored role's Roles name only
// pods, by the resolved names only, and a request is issued (for pods that
// exist in team-a) or refused with a 400 that creates nothing; never an
// internal error or a pod read outside team-a.
func FuzzTargets(f *testing.F) {
	f.Add(`[{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]`, "pod-a,pod-b", "")
	f.Add(`rules: [{apiGroups: [""], resources: [pods], verbs: [get], resourceNames: [x]}]`, "team-c/pod-e", "")
	f.Add(`[{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]`, "", "app=web")
	f.Add(`[]`, "../x,pod-a", "app in (web")
	f.Add(`[{"apiGroups":[""],"resources":["pods/*"],"verbs":["create"]}]`, "team-a/pod-c,pod-a", "app")
	f.Fuzz(func(t *testing.T, rules, targets, selector string) {
		// No logs: a fuzz worker's output is not read while it runs.
		b, s, fk := targetBackendLogging(t, hclog.NewNullLogger(), map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a", "max_targets": 3})
		resp, err := request(t, b, s, logical.UpdateOperation, "roles/scan", map[string]interface{}{"target_rules": rules})
		if err != nil {
			t.Fatalf("role write: internal error for user input: %v", err)
		}
		params := map[string]interface{}{}
		if targets != "" {
			params["targets"] = targets
		}
		if selector != "" {
			params["target_selector"] = selector
		}
		resp, err = request(t, b, s, logical.ReadOperation, "creds/scan", params)
		if err != nil {
			t.Fatalf("creds: internal error for user input: %v", err)
		}
		if reads := podReads(fk); len(reads) > 1 || (len(reads) == 1 && reads["team-a"] == 0) {
			t.Fatalf("pods read outside team-a: %v", reads)
		}
		if resp.IsError() {
			if left := leaseKubeObjects(t, fk); len(left) != 0 || len(fk.tokenRequests()) != 0 {
				t.Fatalf("a refused request created %v", left)
			}
			return
		}
		var resolved []string
		for _, tg := range resp.Data["targets"].([]map[string]interface{}) {
			resolved = append(resolved, tg["pod"].(string))
		}
		slices.Sort(resolved)
		roles, err := fk.clientset.RbacV1().Roles("team-a").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, role := range roles.Items {
			for _, r := range role.Rules {
				if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.ResourceNames, resolved) || len(resolved) == 0 || len(resolved) > 3 {
					t.Fatalf("rule %+v for targets %v", r, resolved)
				}
				for _, res := range r.Resources {
					if res != "pods" && !strings.HasPrefix(res, "pods/") {
						t.Fatalf("rule %+v reaches %s", r, res)
					}
				}
			}
		}
	})
}
