package backend

// The threat model as code: one section per attacker with partial rights,
// each test an answer to "what can this attacker make the plugin do, send,
// create or delete?". docs/reliability.md lists the cases and their results.

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

// ---- (a) a caller who may only read creds/ or kubeconfig/ ----

// The issued token appears only in the credential fields: never in a
// warning, in another field or in the plugin's logs.
func TestThreatCredsCallerTokenOnlyInCredentialFields(t *testing.T) {
	logs := &syncBuffer{}
	b, s, _ := newTestBackendLogging(t, hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}))
	configureCluster(t, b, s)
	configureRole(t, b, s, map[string]interface{}{"max_ttl": "20m"})
	credentialFields := map[string]bool{"service_account_token": true, "kubeconfig": true, "kubeconfig_json": true, "exec_credential": true}

	// ttl above max_ttl: the response carries a warning.
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, map[string]interface{}{"ttl": "2h"})
	token, _ := resp.Data["service_account_token"].(string)
	if token == "" || len(resp.Warnings) == 0 {
		t.Fatalf("want a token and a warning, got %d warnings", len(resp.Warnings))
	}
	for k, v := range resp.Data {
		text := fmt.Sprint(v)
		if credentialFields[k] != strings.Contains(text, token) {
			t.Errorf("field %s: holds the token = %v, want %v", k, strings.Contains(text, token), credentialFields[k])
		}
	}
	for _, w := range resp.Warnings {
		assertNoSecretIn(t, w, token)
	}
	assertNoSecretIn(t, fmt.Sprint(resp.Secret.InternalData), token)
	assertNoSecretIn(t, logs.String(), token)
}

// A creds/ caller of a role scoped to targets names the pods; the plugin
// reads no pod outside the role's namespaces (so a refusal never tells
// whether such a pod exists), no more names than max_targets, and lists a
// selector's matches one above max_targets at most. Every refusal creates
// nothing.
func TestThreatCredsCallerTargetsConfined(t *testing.T) {
	long := strings.Repeat("a", 10<<10)
	cases := []struct {
		name    string
		request map[string]interface{}
		want    string
		// reads is how many pod reads the refusal may cost, in team-a.
		reads int
	}{
		{"pod in a namespace not allowed", map[string]interface{}{"targets": "team-c/pod-e"}, `namespace "team-c" is not allowed`, 0},
		{"missing pod in a namespace not allowed", map[string]interface{}{"targets": "team-c/nope"}, `namespace "team-c" is not allowed`, 0},
		{"allowed pod then one outside", map[string]interface{}{"targets": "pod-a,team-b/pod-d"}, `namespace "team-b" is not allowed`, 0},
		{"selector in a namespace not allowed", map[string]interface{}{"kubernetes_namespace": "team-c", "target_selector": "app=web"}, `namespace "team-c" is not allowed`, 0},
		{"more than max_targets", map[string]interface{}{"targets": "pod-a,pod-b,pod-c"}, "at most 2", 0},
		{"thousands of names", map[string]interface{}{"targets": strings.Repeat("pod-a,", 5000) + "pod-a"}, "at most 2", 0},
		{"selector matching more", map[string]interface{}{"target_selector": "app"}, "matches more than 2", 1},
		{"duplicate to pass max_targets' count", map[string]interface{}{"targets": "pod-a,team-a/pod-a"}, "more than once", 0},
		{"path traversal", map[string]interface{}{"targets": "../kube-system/x"}, "not a pod name", 0},
		{"encoded traversal", map[string]interface{}{"targets": "%2e%2e"}, "not a valid pod name", 0},
		{"query", map[string]interface{}{"targets": "pod-a?watch=true"}, "not a valid pod name", 0},
		{"wildcard", map[string]interface{}{"targets": "*"}, "not a valid pod name", 0},
		{"subresource", map[string]interface{}{"targets": "team-a/pod-a/exec"}, "not a pod name", 0},
		{"newline", map[string]interface{}{"targets": "pod-a\nteam-c/pod-e"}, "not a valid", 0},
		{"10 KiB name", map[string]interface{}{"targets": long}, "not a valid pod name", 0},
		{"selector with a field selector's syntax", map[string]interface{}{"target_selector": "metadata.name!=x,app=web;rm"}, "not a label selector", 0},
		{"10 KiB selector", map[string]interface{}{"target_selector": "app=" + long}, "at most 4096", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := targetBackend(t, map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a", "max_targets": 2})
			resp, err := request(t, b, s, logical.ReadOperation, "creds/scan", tc.request)
			if err != nil || resp == nil || !resp.IsError() || !containsFold(resp.Error().Error(), tc.want) {
				t.Fatalf("want a 400 mentioning %q, got %v %v", tc.want, resp, err)
			}
			if msg := resp.Error().Error(); strings.Contains(msg, long[:300]) {
				t.Errorf("the error echoes the whole input (%d bytes)", len(msg))
			}
			if reads := podReads(fk); len(reads) > 1 || reads["team-a"] != tc.reads {
				t.Errorf("pod reads by namespace = %v, want %d in team-a only", reads, tc.reads)
			}
			assertNothingCreated(t, fk)
		})
	}
}

// A creds/ caller of a role bound to an existing service account cannot use
// the fields Terraform sends (kubernetes_namespace, cluster_role_binding,
// kubernetes_namespaces) to change what is issued: every value other than
// the role's own is refused on GET and POST, on creds/ and kubeconfig/,
// before the API server is called; the values that restate the role issue
// a token of exactly the role's service account, bound to one Secret.
func TestThreatCredsCallerCannotWidenAnExistingAccount(t *testing.T) {
	long := strings.Repeat("n", 10<<10)
	refused := []struct {
		name string
		data map[string]interface{}
		want string
	}{
		{"another namespace", map[string]interface{}{"kubernetes_namespace": "kube-system"}, "may only restate"},
		{"the namespace with a suffix", map[string]interface{}{"kubernetes_namespace": testNamespace + "-x"}, "may only restate"},
		{"a path in the namespace", map[string]interface{}{"kubernetes_namespace": testNamespace + "/../kube-system"}, "may only restate"},
		{"10 KiB namespace", map[string]interface{}{"kubernetes_namespace": long}, "may only restate"},
		{"cluster-wide binding", map[string]interface{}{"kubernetes_namespace": testNamespace, "cluster_role_binding": true}, "cluster_role_binding=true does not apply"},
		{"cluster-wide binding as a string", map[string]interface{}{"cluster_role_binding": "true"}, "cluster_role_binding=true does not apply"},
		{"the namespace as a list", map[string]interface{}{"kubernetes_namespaces": testNamespace}, "kubernetes_namespaces does not apply"},
		{"several namespaces", map[string]interface{}{"kubernetes_namespaces": testNamespace + ",kube-system"}, "kubernetes_namespaces does not apply"},
	}
	for _, op := range []logical.Operation{logical.ReadOperation, logical.UpdateOperation} {
		for _, tc := range refused {
			t.Run(string(op)+" "+tc.name, func(t *testing.T) {
				b, s, fk := newConfiguredBackend(t)
				fk.clientset.ClearActions()
				path := "creds/" + testRole
				if _, list := tc.data["kubernetes_namespaces"]; op == logical.ReadOperation && !list && tc.data["cluster_role_binding"] == nil {
					// kubeconfig/ takes kubernetes_namespace, not cluster_role_binding.
					path = "kubeconfig/" + testRole
				}
				resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Storage: s, Data: tc.data, MountPoint: "scanner/"})
				if err != nil || resp == nil || !resp.IsError() || !containsFold(resp.Error().Error(), tc.want) {
					t.Fatalf("%s %s: want a 400 mentioning %q, got %v %v", op, path, tc.want, resp, err)
				}
				if msg := resp.Error().Error(); strings.Contains(msg, long[:300]) {
					t.Errorf("the error echoes the whole input (%d bytes)", len(msg))
				}
				if acts := fk.clientset.Actions(); len(acts) != 0 {
					t.Errorf("a refused request called the API server: %v", acts)
				}
				if len(walEntries(t, s)) != 0 {
					t.Error("a refused request left a WAL entry")
				}
			})
		}
	}
	t.Run("restating the role issues exactly its account", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		resp := mustOK(t, b, s, logical.UpdateOperation, "creds/"+testRole, map[string]interface{}{"kubernetes_namespace": testNamespace, "cluster_role_binding": false, "ttl": ""})
		claims, err := parseTokenClaims(resp.Data["service_account_token"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if want := "system:serviceaccount:" + testNamespace + ":" + testSA; claims.Sub != want {
			t.Errorf("token subject %q, want %q", claims.Sub, want)
		}
		if left := leaseKubeObjects(t, fk); len(left) != 1 || left[kindSecret] != 1 {
			t.Errorf("objects %v, want one bound Secret", left)
		}
	})
}

// A kubeconfig/ answer is often read, and its command run, by someone
// else: a caller cannot make it name any program but vault or bao on the
// reader's PATH, nor slip a second command or variable in through the
// namespace, and what it does pass on stays separate arguments.
func TestThreatKubeconfigCallerCannotChooseAProgram(t *testing.T) {
	refused := []map[string]interface{}{
		{"exec_command": "sh"},
		{"exec_command": "/bin/sh"},
		{"exec_command": "/tmp/vault"},
		{"exec_command": "./vault"},
		{"exec_command": "vault; id"},
		{"exec_command": "vault\nid"},
		{"exec_command": "VAULT"},
		{"exec_command": "python3"},
		{"vault_namespace": "scanner\nBAO_ADDR=http://evil"},
		{"vault_namespace": "x y"},
		{"vault_namespace": "../.."},
	}
	for _, data := range refused {
		t.Run(fmt.Sprint(data), func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			fk.clientset.ClearActions()
			resp, err := kubeconfigRequest(t, b, s, "team/scanner/", testRole, data)
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("want a 400, got %v %v", resp, err)
			}
			if acts := fk.clientset.Actions(); len(acts) != 0 {
				t.Errorf("a refused request called the API server: %v", acts)
			}
		})
	}
	t.Run("accepted answers run vault or bao with separate arguments", func(t *testing.T) {
		b, s, _ := ephemeralBackend(t, map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "*"})
		for _, data := range []map[string]interface{}{
			{"exec_command": "bao", "vault_namespace": "team", "kubernetes_namespace": "team-a"},
			{"exec_command": "vault", "ttl": "5m", "kubernetes_namespace": "team-b"},
		} {
			_, _, user, _ := loadExecKubeconfig(t, mustKubeconfig(t, b, s, "team/scanner/", "eph", data).Data["kubeconfig"].(string))
			if c := user.Exec.Command; c != "vault" && c != "bao" {
				t.Errorf("command %q", c)
			}
			for _, env := range user.Exec.Env {
				if env.Name != "VAULT_NAMESPACE" && env.Name != "BAO_NAMESPACE" {
					t.Errorf("exec env sets %s", env.Name)
				}
			}
			for _, a := range user.Exec.Args {
				if strings.ContainsAny(a, " ;|&$`\n") {
					t.Errorf("argument %q holds shell syntax", a)
				}
			}
		}
	})
}

// ---- issuer mode: helpers ----

// issuerWire is a mount whose cluster-a is in issuer mode and is a TLS API
// server on the wire, reached with the real client; logger nil: the SDK's.
func issuerWire(t *testing.T, logger hclog.Logger) (*backend, logical.Storage, *apiServer) {
	t.Helper()
	api := newAPIServer(t)
	b, s, _ := newTestBackendLogging(t, logger)
	b.newKubeAPI = newClientsetAPI
	b.requestTimeout = 5 * time.Second
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, api.URL, api.caPEM)
	configureRole(t, b, s, nil)
	return b, s, api
}

var jwtLike = regexp.MustCompile(`[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)

// issuerSecretsIn names what text holds of the issuer's secrets: a JWT
// signed by any of its keys (current, next or previous), or a private
// key in any encoding it is stored or published in.
func issuerSecretsIn(t *testing.T, s logical.Storage, text string) []string {
	t.Helper()
	keys, err := getIssuerKeySet(context.Background(), s)
	if err != nil || keys == nil {
		t.Fatalf("key set: %v", err)
	}
	var found []string
	set := jose.JSONWebKeySet{}
	for _, k := range keys.Keys {
		set.Keys = append(set.Keys, k.public())
		encodings := []string{base64.StdEncoding.EncodeToString(k.PrivateKey), base64.RawURLEncoding.EncodeToString(k.PrivateKey)}
		switch key := k.signer.(type) {
		case *rsa.PrivateKey:
			encodings = append(encodings, base64.RawURLEncoding.EncodeToString(key.D.Bytes()), key.D.String())
		case *ecdsa.PrivateKey:
			d, _ := key.Bytes()
			encodings = append(encodings, base64.RawURLEncoding.EncodeToString(d))
		}
		for _, e := range encodings {
			if strings.Contains(text, e) {
				found = append(found, "private key "+k.ID)
			}
		}
	}
	if strings.Contains(text, "PRIVATE KEY") {
		found = append(found, "a PEM private key")
	}
	for _, candidate := range jwtLike.FindAllString(text, -1) {
		if _, _, err := verifyIssued(t, set, candidate); err == nil {
			found = append(found, "a token the plugin signed")
		}
	}
	return found
}

// responseText is everything a response carries, raw bodies as text.
func responseText(resp *logical.Response, err error) string {
	if resp == nil {
		return fmt.Sprint(err)
	}
	var b strings.Builder
	for k, v := range resp.Data {
		if raw, ok := v.([]byte); ok {
			v = string(raw)
		}
		fmt.Fprintf(&b, "%s=%v\n", k, v)
	}
	fmt.Fprintf(&b, "%v %v %v", resp.Warnings, resp.Secret, err)
	return b.String()
}

// No read or write a caller can make returns a token the plugin signed or
// its key material, and neither reaches the logs; the scan itself finds
// the tokens the API server received.
func TestThreatNoPathReturnsIssuerTokenOrKey(t *testing.T) {
	logs := &syncBuffer{}
	b, s, api := issuerWire(t, hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}))
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	mustOK(t, b, s, logical.UpdateOperation, "issuer/rotate", nil) // a previous key too
	b.resetClients()
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)

	sent := strings.Join(api.authorizations(), "\n")
	if len(issuerSecretsIn(t, s, sent)) == 0 {
		t.Fatal("the scan does not find the tokens the API server received")
	}
	calls := []struct {
		op   logical.Operation
		path string
	}{
		{logical.ReadOperation, "creds/" + testRole},
		{logical.UpdateOperation, "creds/" + testRole},
		{logical.ReadOperation, "kubeconfig/" + testRole},
		{logical.ReadOperation, "roles/" + testRole},
		{logical.ReadOperation, "issuer/config"},
		{logical.UpdateOperation, "issuer/config"},
		{logical.UpdateOperation, "issuer/rotate"},
		{logical.ReadOperation, wellKnownDiscoveryPath},
		{logical.ReadOperation, wellKnownKeysPath},
		{logical.ReadOperation, "clusters/" + testCluster},
		{logical.UpdateOperation, "clusters/" + testCluster},
		{logical.ReadOperation, "clusters/" + testCluster + "/authentication-config"},
		{logical.ReadOperation, "clusters/" + testCluster + "/rbac"},
		{logical.ReadOperation, "clusters/" + testCluster + "/check"},
		{logical.UpdateOperation, "clusters/" + testCluster + "/rotate-root"},
	}
	for _, c := range calls {
		text := responseText(request(t, b, s, c.op, c.path, nil))
		if found := issuerSecretsIn(t, s, text); len(found) > 0 {
			t.Errorf("%s %s returns %v", c.op, c.path, found)
		}
	}
	if found := issuerSecretsIn(t, s, logs.String()); len(found) > 0 {
		t.Errorf("the logs hold %v", found)
	}
}

// ---- (b) a roles/ writer ----

// A role never yields the plugin's own identity: not the current
// credential's, not a retired endpoint's, not the pod's own; refused at
// role write, and at issue when the identity changed after the role was
// written. Nothing is created in Kubernetes.
func TestThreatRoleWriterCannotObtainPluginIdentity(t *testing.T) {
	pluginRole := map[string]interface{}{"cluster": testCluster, "service_account_name": pluginSA, "service_account_namespace": pluginNamespace}
	scannerJWT := fakeJWT(map[string]interface{}{"sub": serviceAccountUser(testNamespace, testSA)})
	cases := []struct {
		name  string
		setup func(t *testing.T, b *backend, s logical.Storage)
		// role is written before setup runs when issueOnly is set.
		role      map[string]interface{}
		issueOnly bool
	}{
		{
			name: "current credential",
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_host": testHost, "kubernetes_ca_cert": testCAPEM(t), "service_account_jwt": bootstrapJWT("j1", time.Hour)})
			},
			role: pluginRole,
		},
		{
			name: "retired endpoint's credential",
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_host": testHost, "kubernetes_ca_cert": testCAPEM(t), "service_account_jwt": bootstrapJWT("j1", time.Hour)})
				mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_host": "https://127.0.0.2:6443", "service_account_jwt": testRequesterJWT})
			},
			role: pluginRole,
		},
		{
			name: "the pod's own token",
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				dir := t.TempDir()
				b.inCluster = inClusterEnv{TokenPath: filepath.Join(dir, "token"), CAPath: filepath.Join(dir, "ca.crt"), Getenv: func(k string) string {
					return map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}[k]
				}}
				writeFile(t, b.inCluster.TokenPath, bootstrapJWT("pod", time.Hour))
				writeFile(t, b.inCluster.CAPath, testCAPEM(t))
				mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{})
			},
			role: pluginRole,
		},
		{
			name: "credential rewritten after the role",
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"service_account_jwt": scannerJWT})
			},
			role:      map[string]interface{}{"cluster": testCluster, "service_account_name": testSA, "service_account_namespace": testNamespace},
			issueOnly: true,
		},
		{
			name: "claims silent, API server names the account",
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				// testRequesterJWT's claims name no service account; the
				// fake's SelfSubjectReview answers with scanner-sa.
				fk := b.newKubeAPI
				b.newKubeAPI = func(cfg *rest.Config) (kubeAPI, error) {
					api, err := fk(cfg)
					return fixedWhoAmI{kubeAPI: api, user: serviceAccountUser(testNamespace, testSA)}, err
				}
				b.resetClients()
			},
			role:      map[string]interface{}{"cluster": testCluster, "service_account_name": testSA, "service_account_namespace": testNamespace},
			issueOnly: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newTestBackend(t)
			if tc.issueOnly {
				configureCluster(t, b, s)
				mustOK(t, b, s, logical.CreateOperation, "roles/r", tc.role)
				tc.setup(t, b, s)
			} else {
				tc.setup(t, b, s)
				mustBadRequest(t, b, s, logical.CreateOperation, "roles/r", tc.role, "plugin's own credential")
				// As if stored before the check existed.
				putRoleUnchecked(t, s, "r", tc.role)
			}
			mustBadRequest(t, b, s, logical.ReadOperation, "creds/r", nil, "plugin's own credential")
			if n := len(fk.managedSecrets(t)); n != 0 || len(fk.tokenRequests()) != 0 {
				t.Errorf("a refused role created %d Secrets and %d TokenRequests", n, len(fk.tokenRequests()))
			}
			resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
			if resp.Data["ok"] != false || resp.Data["role_errors"].(map[string]interface{})["r"] == nil {
				t.Errorf("check: ok=%v role_errors=%v, want the role reported", resp.Data["ok"], resp.Data["role_errors"])
			}
		})
	}
}

// In issuer mode the plugin's identity is a User the claims do not name,
// so issue asks the API server whom it is: were an API server to map the
// plugin's tokens to the role's service account, the role is refused.
func TestThreatRoleWriterIssuerIdentityAsked(t *testing.T) {
	b, s, fk := newTestBackend(t)
	api := fk.factory()
	user := serviceAccountUser(testNamespace, testSA)
	b.newKubeAPI = func(cfg *rest.Config) (kubeAPI, error) {
		k, err := api(cfg)
		return fixedWhoAmI{kubeAPI: k, user: user}, err
	}
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	configureRole(t, b, s, nil)
	mustBadRequest(t, b, s, logical.ReadOperation, "creds/"+testRole, nil, "plugin's own credential")
	if n := len(fk.tokenRequests()); n != 0 {
		t.Errorf("a refused role sent %d TokenRequests", n)
	}
	user = issuerUsername(testIssuer, "scanner:"+testCluster)
	b.resetClients()
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
}

// Generated rules can only grant what the plugin holds, and the plugin
// holds the rights of its own work: a roles/ writer must not be able to
// hand those to a lease (mint tokens for any account in the namespace,
// read or delete Secrets, write RBAC).
func TestThreatRoleWriterCannotDelegatePluginRights(t *testing.T) {
	cases := []struct {
		name, rules string
		refused     bool
	}{
		{"mint tokens", `[{"apiGroups":[""],"resources":["serviceaccounts/token"],"verbs":["create"]}]`, true},
		{"any subresource token", `[{"apiGroups":["*"],"resources":["*/token"],"verbs":["create"]}]`, true},
		{"read secrets", `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","list"]}]`, true},
		{"everything in core", `[{"apiGroups":[""],"resources":["*"],"verbs":["get"]}]`, true},
		{"write rolebindings", `[{"apiGroups":["rbac.authorization.k8s.io"],"resources":["rolebindings"],"verbs":["create"]}]`, true},
		{"bind", `[{"apiGroups":["rbac.authorization.k8s.io"],"resources":["roles"],"verbs":["bind"]}]`, true},
		{"impersonate", `[{"apiGroups":[""],"resources":["users"],"verbs":["impersonate"]}]`, true},
		{"create service accounts", `[{"apiGroups":[""],"resources":["serviceaccounts"],"verbs":["create"]}]`, true},
		{"read pods", `[{"apiGroups":[""],"resources":["pods","pods/log"],"verbs":["get","list"]}]`, false},
		{"exec into pods", `[{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]`, false},
		{"read service accounts", `[{"apiGroups":[""],"resources":["serviceaccounts"],"verbs":["get","list"]}]`, false},
		{"read roles", `[{"apiGroups":["rbac.authorization.k8s.io"],"resources":["roles"],"verbs":["get"]}]`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureCluster(t, b, s)
			role := map[string]interface{}{"cluster": testCluster, "generated_role_rules": tc.rules, "allowed_kubernetes_namespaces": testNamespace}
			if tc.refused {
				mustBadRequest(t, b, s, logical.CreateOperation, "roles/gen", role, "a right the plugin holds")
				return
			}
			mustOK(t, b, s, logical.CreateOperation, "roles/gen", role)
		})
	}
}

// Kubernetes lets the plugin bind any role whose rights it holds, and it
// holds those of its own Role: binding it (or any role granting such
// rights) is refused at issue, and creates nothing.
func TestThreatRoleWriterCannotBindPluginRole(t *testing.T) {
	cases := []struct {
		name, kind string
		rules      []rbacv1.PolicyRule
		refused    bool
	}{
		{"the plugin's own Role", kindRole, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, Verbs: []string{"create"}}}, true},
		{"a ClusterRole that deletes Secrets", kindClusterRole, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"delete"}}}, true},
		{"a pod reader", kindRole, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newTestBackend(t)
			configureCluster(t, b, s)
			meta := metav1.ObjectMeta{Name: "bound", Namespace: testNamespace}
			var err error
			if tc.kind == kindRole {
				_, err = fk.clientset.RbacV1().Roles(testNamespace).Create(context.Background(), &rbacv1.Role{ObjectMeta: meta, Rules: tc.rules}, metav1.CreateOptions{})
			} else {
				meta.Namespace = ""
				_, err = fk.clientset.RbacV1().ClusterRoles().Create(context.Background(), &rbacv1.ClusterRole{ObjectMeta: meta, Rules: tc.rules}, metav1.CreateOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			mustOK(t, b, s, logical.CreateOperation, "roles/bind", map[string]interface{}{"cluster": testCluster, "kubernetes_role_name": "bound", "kubernetes_role_type": tc.kind, "allowed_kubernetes_namespaces": testNamespace})
			if !tc.refused {
				mustOK(t, b, s, logical.ReadOperation, "creds/bind", nil)
				return
			}
			mustBadRequest(t, b, s, logical.ReadOperation, "creds/bind", nil, "a right the plugin holds")
			sas, _ := fk.clientset.CoreV1().ServiceAccounts(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: managedBySelector})
			if len(sas.Items) != 0 {
				t.Errorf("a refused bind created %d ServiceAccounts", len(sas.Items))
			}
		})
	}
}

// fixedWhoAmI answers SelfSubjectReview with one user.
type fixedWhoAmI struct {
	kubeAPI
	user string
}

func (f fixedWhoAmI) WhoAmI(context.Context) (string, error) { return f.user, nil }

// Where the plugin may mint tokens for any service account (deploy/'s
// ephemeral namespaces), an existing-account role would let its writer
// choose any identity there: refused at issue and reported by check.
func TestThreatRoleWriterUnrestrictedTokenNamespace(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	var broad sync.Map
	broad.Store("on", true)
	fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
		on, _ := broad.Load("on")
		return on.(bool) || deployRights(attrs)
	})
	mustBadRequest(t, b, s, logical.ReadOperation, "creds/"+testRole, nil, "resourceNames")
	if n := len(fk.managedSecrets(t)); n != 0 || len(fk.tokenRequests()) != 0 {
		t.Fatalf("created %d Secrets, %d TokenRequests", n, len(fk.tokenRequests()))
	}
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	if resp.Data["ok"] != false || !strings.Contains(fmt.Sprint(resp.Data["role_errors"]), "resourceNames") {
		t.Errorf("check: ok=%v role_errors=%v", resp.Data["ok"], resp.Data["role_errors"])
	}
	// Once the right names its accounts, the role issues.
	broad.Store("on", false)
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
}

// What a role writer stores is bounded where it is stored, and check's
// work is bounded whatever is stored.
func TestThreatRoleWriterBoundedWork(t *testing.T) {
	manyNames := make([]string, 100)
	for i := range manyNames {
		manyNames[i] = fmt.Sprintf("%q", fmt.Sprintf("pod-%d", i))
	}
	// 6 verbs x 2 resources x 100 names: 1,200 permissions in 1.5 KiB.
	bigRules := fmt.Sprintf(`[{"apiGroups":[""],"resources":["pods","pods/log"],"verbs":["get","list","watch","create","delete","patch"],"resourceNames":[%s]}]`, strings.Join(manyNames, ","))
	namespaces := make([]string, maxAllowedNamespaces+1)
	for i := range namespaces {
		namespaces[i] = fmt.Sprintf("ns-%d", i)
	}
	cases := []struct {
		name string
		role map[string]interface{}
		want string
	}{
		{"rules expanding beyond the bound", map[string]interface{}{"generated_role_rules": bigRules, "allowed_kubernetes_namespaces": "team-a"}, "expand to more than 1024"},
		{"too many allowed namespaces", map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": strings.Join(namespaces, ",")}, "at most 128"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureCluster(t, b, s)
			tc.role["cluster"] = testCluster
			mustBadRequest(t, b, s, logical.CreateOperation, "roles/big", tc.role, tc.want)
		})
	}

	t.Run("check over a role stored before the bound", func(t *testing.T) {
		b, s, fk := newTestBackend(t)
		configureCluster(t, b, s)
		// 20 verbs x 20 groups x 20 resources x 20 names per rule: 160,000
		// permissions, in a few kilobytes.
		list := func(prefix string) string {
			items := make([]string, 20)
			for i := range items {
				items[i] = fmt.Sprintf("%q", fmt.Sprintf("%s%d", prefix, i))
			}
			return strings.Join(items, ",")
		}
		rules := fmt.Sprintf(`[{"apiGroups":[%s],"resources":[%s],"verbs":[%s],"resourceNames":[%s]}]`, list("g"), list("r"), list("v"), list("n"))
		putRoleUnchecked(t, s, "huge", map[string]interface{}{"cluster": testCluster, "generated_role_rules": rules, "allowed_kubernetes_namespaces": strings.Join(namespaces[:maxAllowedNamespaces], ",")})
		var reviews int
		var mu sync.Mutex
		fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
			mu.Lock()
			reviews++
			mu.Unlock()
			return attrs.Verb != "escalate"
		})
		resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
		if reviews > maxCheckReviews+selfRotationReviews {
			t.Errorf("check sent %d access reviews, bound is %d", reviews, maxCheckReviews)
		}
		if resp.Data["ok"] != false {
			t.Errorf("check of an unfinished review said ok")
		}
	})
}

// selfRotationReviews are the reviews check sends about rotation (create
// serviceaccounts/token, create and delete secrets), outside the roles'
// budget.
const selfRotationReviews = 3

// putRoleUnchecked stores a role as an older version of the plugin would
// have, without today's validation.
func putRoleUnchecked(t *testing.T, s logical.Storage, name string, fields map[string]interface{}) {
	t.Helper()
	role := &roleEntry{TTL: defaultRoleTTL, MaxTTL: defaultRoleMaxTTL}
	str := func(k string) string { v, _ := fields[k].(string); return v }
	role.Cluster, role.ServiceAccountName, role.ServiceAccountNamespace = str("cluster"), str("service_account_name"), str("service_account_namespace")
	role.GeneratedRoleRules, role.KubernetesRoleName = str("generated_role_rules"), str("kubernetes_role_name")
	if ns := str("allowed_kubernetes_namespaces"); ns != "" {
		role.AllowedNamespaces = strings.Split(ns, ",")
	}
	if role.ephemeral() {
		role.KubernetesRoleType = kindRole
	}
	entry, err := logical.StorageEntryJSON(roleStoragePrefix+name, role)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), entry); err != nil {
		t.Fatal(err)
	}
}

// A roles/ writer's target_rules reach pods and their subresources only,
// never name pods themselves (the plugin names the request's), and stay
// within the permission bound at max_targets names; a role stored before
// these checks is refused at issue and creates nothing.
func TestThreatRoleWriterTargetRules(t *testing.T) {
	verbs := make([]string, 11)
	for i := range verbs {
		verbs[i] = fmt.Sprintf("%q", fmt.Sprintf("v%d", i))
	}
	cases := []struct {
		name   string
		fields map[string]interface{}
		want   string
	}{
		{"resourceNames of its choosing", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"],"resourceNames":["kube-apiserver-node1"]}]`}, "resourceNames"},
		{"tokens", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["serviceaccounts/token"],"verbs":["create"]}]`}, "pods and their subresources"},
		{"secrets", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","list"]}]`}, "pods and their subresources"},
		{"every resource", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["*"],"verbs":["*"]}]`}, "pods and their subresources"},
		{"every exec", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["*/exec"],"verbs":["create"]}]`}, "pods and their subresources"},
		{"nodes/proxy", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["nodes/proxy"],"verbs":["get"]}]`}, "pods and their subresources"},
		{"RBAC in a pods-named resource", map[string]interface{}{"target_rules": `[{"apiGroups":["rbac.authorization.k8s.io"],"resources":["pods"],"verbs":["escalate"]}]`}, `apiGroups [""]`},
		{"every group", map[string]interface{}{"target_rules": `[{"apiGroups":["*"],"resources":["pods"],"verbs":["get"]}]`}, `apiGroups [""]`},
		{"nonResourceURLs", map[string]interface{}{"target_rules": `[{"nonResourceURLs":["*"],"verbs":["*"]}]`}, "nonResourceURLs"},
		{"impersonate on pods", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["pods"],"verbs":["impersonate"]}]`}, "a right the plugin holds"},
		{"permissions beyond the bound", map[string]interface{}{"max_targets": 50, "target_rules": fmt.Sprintf(`[{"apiGroups":[""],"resources":["pods","pods/log"],"verbs":[%s]}]`, strings.Join(verbs, ","))}, "more than 1024"},
		{"max_targets beyond 50", map[string]interface{}{"target_profiles": "exec", "max_targets": 1000}, "between 1 and 50"},
		{"negative max_targets", map[string]interface{}{"target_profiles": "exec", "max_targets": -1}, "between 1 and 50"},
		{"rules beyond 64 KiB", map[string]interface{}{"target_rules": "# " + strings.Repeat("x", maxRulesBytes)}, "at most 65536"},
		{"a Role cluster-wide", map[string]interface{}{"target_profiles": "exec", "kubernetes_role_type": "ClusterRole", "allow_cluster_role_binding": true}, "kubernetes_role_type=Role"},
		{"an existing role besides", map[string]interface{}{"target_profiles": "exec", "kubernetes_role_name": "cluster-admin"}, "set exactly one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureCluster(t, b, s)
			data := map[string]interface{}{"cluster": testCluster, "allowed_kubernetes_namespaces": "team-a"}
			for k, v := range tc.fields {
				data[k] = v
			}
			mustBadRequest(t, b, s, logical.CreateOperation, "roles/scan", data, tc.want)
		})
	}

	t.Run("stored before the checks", func(t *testing.T) {
		b, s, fk := targetBackend(t, map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a"})
		role := &roleEntry{Cluster: testCluster, TTL: defaultRoleTTL, MaxTTL: defaultRoleMaxTTL, KubernetesRoleType: kindRole, AllowedNamespaces: []string{"team-a"}, MaxTargets: 5,
			TargetRules: `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"],"resourceNames":["db-password"]}]`}
		entry, err := logical.StorageEntryJSON(roleStoragePrefix+"old", role)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(context.Background(), entry); err != nil {
			t.Fatal(err)
		}
		mustBadRequest(t, b, s, logical.ReadOperation, "creds/old", map[string]interface{}{"targets": "pod-a"}, "can no longer be issued")
		assertNothingCreated(t, fk)
		if reads := podReads(fk); len(reads) != 0 {
			t.Errorf("pods read for a role that cannot be issued: %v", reads)
		}
	})
}

// A generated ClusterRole carries none of the role's extra_labels, so no
// aggregated ClusterRole can select it and copy the lease's rules to
// subjects without a lease; the other objects keep them.
func TestThreatRoleWriterNoAggregationLabels(t *testing.T) {
	b, s, fk := newTestBackend(t)
	configureCluster(t, b, s)
	resp := mustOK(t, b, s, logical.CreateOperation, "roles/agg", map[string]interface{}{
		"cluster": testCluster, "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": testNamespace,
		"generated_role_rules": `[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]}]`,
		"extra_labels":         []string{"team=a", "aggregate-to-scanners=true"},
	})
	if resp == nil || !strings.Contains(strings.Join(resp.Warnings, " "), "ClusterRole") {
		t.Errorf("role write: want a warning that extra_labels skip the ClusterRole")
	}
	mustOK(t, b, s, logical.ReadOperation, "creds/agg", nil)
	crs, err := fk.clientset.RbacV1().ClusterRoles().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(crs.Items) != 1 {
		t.Fatalf("ClusterRoles: %v %v", crs, err)
	}
	aggregated := &metav1.LabelSelector{MatchLabels: map[string]string{"aggregate-to-scanners": "true"}}
	sel, _ := metav1.LabelSelectorAsSelector(aggregated)
	if got := crs.Items[0].Labels; sel.Matches(labels.Set(got)) || got["team"] != "" || got[managedByLabel] != managedByValue {
		t.Errorf("generated ClusterRole labels = %v", got)
	}
	sas, _ := fk.clientset.CoreV1().ServiceAccounts(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "team=a"})
	rbs, _ := fk.clientset.RbacV1().RoleBindings(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "team=a"})
	if len(sas.Items) != 1 || len(rbs.Items) != 1 {
		t.Errorf("extra_labels missing on the ServiceAccount (%d) or RoleBinding (%d)", len(sas.Items), len(rbs.Items))
	}
}

// "A cluster a role uses cannot be deleted" holds under concurrency: a
// role write racing a cluster delete leaves either both or a refused role.
func TestThreatRoleWriteRacesClusterDelete(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureCluster(t, b, s)
			// The delete's look at the roles is slow, so the role write
			// lands inside it unless they share a lock.
			slow := &slowListStorage{Storage: s, prefix: roleStoragePrefix, delay: 20 * time.Millisecond}
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = request(t, b, slow, logical.DeleteOperation, "clusters/"+testCluster, nil)
			}()
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i%4) * 5 * time.Millisecond)
				_, _ = request(t, b, s, logical.CreateOperation, "roles/"+testRole, map[string]interface{}{"cluster": testCluster, "service_account_name": testSA, "service_account_namespace": testNamespace})
			}()
			wg.Wait()
			role, _ := getRole(context.Background(), s, testRole)
			cfg, _ := getCluster(context.Background(), s, testCluster)
			if role != nil && cfg == nil {
				t.Fatalf("role %q uses cluster %q, which was deleted", testRole, testCluster)
			}
		})
	}
}

type slowListStorage struct {
	logical.Storage
	prefix string
	delay  time.Duration
}

// List answers at once but returns late, so what it returns is stale.
func (s *slowListStorage) List(ctx context.Context, prefix string) ([]string, error) {
	keys, err := s.Storage.List(ctx, prefix)
	if prefix == s.prefix {
		time.Sleep(s.delay)
	}
	return keys, err
}

// ---- (c) a clusters/ writer who never saw the stored credential ----

// A secret sent with the wrong JSON type is refused without being echoed:
// the SDK's own conversion error would quote it (and so the audit log).
func TestThreatClusterWriterMistypedSecretsNotEchoed(t *testing.T) {
	const password = "hunter2-proxy-password"
	cases := []struct {
		name, field string
		value       interface{}
		secret      string
	}{
		{"jwt as a list", "service_account_jwt", []interface{}{testRequesterJWT}, testRequesterJWT},
		{"jwt as an object", "service_account_jwt", map[string]interface{}{"token": testRequesterJWT}, testRequesterJWT},
		{"proxy as a list", "proxy_url", []interface{}{"http://u:" + password + "@proxy:3128"}, password},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			data := map[string]interface{}{"kubernetes_host": testHost, "kubernetes_ca_cert": testCAPEM(t), "service_account_jwt": testRequesterJWT}
			data[tc.field] = tc.value
			resp, err := request(t, b, s, logical.CreateOperation, "clusters/"+testCluster, data)
			code, msg := statusOf(resp, err)
			if code != http.StatusBadRequest || !strings.Contains(msg, tc.field) {
				t.Fatalf("status %d %q, want 400 naming %s", code, msg, tc.field)
			}
			if strings.Contains(msg, tc.secret) || strings.Contains(msg, "eyJ") {
				t.Errorf("the error echoes the secret: %q", msg)
			}
			if cfg, _ := getCluster(context.Background(), s, testCluster); cfg != nil {
				t.Errorf("a refused write stored the cluster")
			}
		})
	}
}

// A clusters/ writer needs no credential to re-point a cluster in issuer
// mode, and gains nothing by it: their endpoint receives tokens for a new
// audience, never one the real API server accepts.
func TestThreatClusterWriterRepointsIssuerCluster(t *testing.T) {
	b, s, legit := issuerWire(t, nil)
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	trusted := readResponseData(t, b, s, "clusters/"+testCluster)["issuer_audience"].(string)

	attacker := newAttacker(t)
	resp := mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_host": attacker.URL, "kubernetes_ca_cert": attacker.caPEM})
	if resp == nil || len(resp.Warnings) == 0 {
		t.Error("re-pointing does not warn that the API server must trust a new audience")
	}
	_, _ = request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	set := publishedKeys(t, b, s)
	audiences := func(api *apiServer) map[string]bool {
		out := map[string]bool{}
		for _, h := range api.authorizations() {
			_, claims, err := verifyIssued(t, set, strings.TrimPrefix(h, "Bearer "))
			if err != nil {
				t.Fatalf("a request without a token the plugin signed: %v", err)
			}
			for _, a := range claims.Audience {
				out[a] = true
			}
		}
		return out
	}
	got := audiences(attacker)
	if len(got) == 0 {
		t.Fatal("the re-pointed cluster sent nothing (the test proves nothing)")
	}
	if got[trusted] || len(got) != 1 {
		t.Errorf("the attacker's endpoint received audiences %v; the real API server trusts %s", sortedKeys(got), trusted)
	}
	if legitAuds := audiences(legit); len(legitAuds) != 1 || !legitAuds[trusted] {
		t.Errorf("the real API server received audiences %v", sortedKeys(legitAuds))
	}
}

// A clusters/ writer chooses the command of every kubeconfig/ answer for
// the cluster, which other people run: only vault or bao, by name or by a
// clean absolute path outside world-writable directories; a refused write
// leaves the entry as it was, and the credential is not needed for it.
func TestThreatClusterWriterExecCommandConfined(t *testing.T) {
	for _, command := range []string{"/bin/sh", "sh", "/usr/bin/env", "/tmp/vault", "/dev/shm/bao", "/var/tmp/vault", "/usr/bin/vault/../../bin/sh", "bin/vault", "/usr/bin/vault\n/bin/sh", "/usr/bin/vault-helper"} {
		t.Run(command, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubeconfig_exec_command": "bao"})
			mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubeconfig_exec_command": command}, "kubeconfig_exec_command must")
			_, _, user, _ := loadExecKubeconfig(t, mustKubeconfig(t, b, s, "scanner/", testRole, nil).Data["kubeconfig"].(string))
			if user.Exec.Command != "bao" {
				t.Errorf("after a refused write the command is %q, want the stored bao", user.Exec.Command)
			}
		})
	}
}

// ---- (d) the network, or an API server that answers nonsense ----

// A TokenRequest answer that is not a JWT is the API server's fault (502),
// and the lease's objects are gone.
func TestThreatUnusableTokenAnswerIs502(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.clientset.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		tr.Status.Token = "opaque-not-a-jwt"
		tr.Status.ExpirationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
		return true, tr, nil
	})
	code, msg := statusOf(request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil))
	if code != http.StatusBadGateway || strings.Contains(msg, "opaque-not-a-jwt") {
		t.Fatalf("status %d %q, want 502 without the answer", code, msg)
	}
	if n := len(fk.managedSecrets(t)); n != 0 {
		t.Errorf("%d Secrets left", n)
	}
}

// In issuer mode TLS is verified as with a stored credential: an endpoint
// whose certificate the CA does not sign gets no request at all.
func TestThreatNetworkIssuerModeVerifiesTLS(t *testing.T) {
	api := newAPIServer(t)
	b, s, _ := newTestBackend(t)
	b.newKubeAPI = newClientsetAPI
	b.requestTimeout = 5 * time.Second
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, api.URL, otherCAPEM(t))
	configureRole(t, b, s, nil)
	code, _ := statusOf(request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil))
	if code != http.StatusBadGateway {
		t.Errorf("status %d, want 502", code)
	}
	if seen := api.authorizations(); len(seen) != 0 {
		t.Errorf("an endpoint the CA does not vouch for received %d requests", len(seen))
	}
}

// The published documents say where the keys are and what they are, and
// nothing about the mount's clusters, audiences, subjects or key states.
func TestThreatNetworkDocumentsRevealNothingElse(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	_, _, _, discoveryBefore := rawDocument(t, b, s, wellKnownDiscoveryPath)
	_, _, _, keysBefore := rawDocument(t, b, s, wellKnownKeysPath)
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	configureRole(t, b, s, nil)
	cluster := readResponseData(t, b, s, "clusters/"+testCluster)
	_, _, _, discoveryAfter := rawDocument(t, b, s, wellKnownDiscoveryPath)
	_, _, _, keysAfter := rawDocument(t, b, s, wellKnownKeysPath)
	if string(discoveryBefore) != string(discoveryAfter) || string(keysBefore) != string(keysAfter) {
		t.Error("the documents change when clusters and roles are written")
	}
	for _, secret := range []string{testCluster, cluster["issuer_audience"].(string), cluster["endpoint_id"].(string), keyCurrent, keyNext, "created"} {
		if strings.Contains(string(discoveryAfter)+string(keysAfter), secret) {
			t.Errorf("the documents reveal %q", secret)
		}
	}
}

// ---- (e) a Kubernetes user who can write in a managed namespace ----

// Deleting a namespace makes the API server answer creates with 403; that
// is not the plugin's RBAC, and retrying will not help: 400, saying so.
func TestThreatTerminatingNamespaceIs400(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.clientset.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		err := apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("unable to create new content in namespace "+testNamespace+" because it is being terminated"))
		err.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause, Message: "namespace is being terminated", Field: "metadata.namespace"}}
		return true, nil, err
	})
	code, msg := statusOf(request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil))
	if code != http.StatusBadRequest || !strings.Contains(msg, "being deleted") || strings.Contains(msg, "grant it") {
		t.Fatalf("status %d %q, want 400 saying the namespace is being deleted", code, msg)
	}
}

// Nothing the plugin writes into a managed namespace carries a token it
// signed: a user who can read Secrets there learns nothing that
// authenticates as the plugin.
func TestThreatKubeUserFindsNoIssuerToken(t *testing.T) {
	b, s, api := issuerWire(t, nil)
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	created := api.createdSecrets()
	if len(created) == 0 {
		t.Fatal("no Secret was created (the test proves nothing)")
	}
	text, err := json.Marshal(created)
	if err != nil {
		t.Fatal(err)
	}
	if found := issuerSecretsIn(t, s, string(text)); len(found) > 0 {
		t.Errorf("the Secrets the plugin created hold %v", found)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
