package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Annotations the plugin puts on every object it creates.
const (
	ownerMarkAnnotation = "vault-plugin-scanner/owner-mark"
	expiresAtAnnotation = "vault-plugin-scanner/expires-at"
)

// writeRoleStatus POSTs roles/<name> (cluster cluster-a unless fields name
// another) and returns the HTTP status and the error text, which must hold
// no JWT. Whatever was stored is deleted when the test ends.
func writeRoleStatus(t *testing.T, name string, fields map[string]any) (int, string) {
	t.Helper()
	data := map[string]any{"cluster": stack.ClusterName}
	maps.Copy(data, fields)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.Vault.CLI(ctx, "delete", stack.Mount+"/roles/"+name); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: delete role %s: %v %s", name, err, res)
		}
	})
	code, vr := rawVault(t, http.MethodPost, stack.Mount+"/roles/"+name, data)
	text := strings.Join(vr.Errors, "; ")
	assertNoJWTIn(t, "the roles/"+name+" answer", text+strings.Join(vr.Warnings, "; "), st.TokenRequesterJWT)
	return code, text
}

// roleStored says whether GET roles/<name> finds the role.
func roleStored(t *testing.T, name string) bool {
	t.Helper()
	code, _ := rawVault(t, http.MethodGet, stack.Mount+"/roles/"+name, nil)
	return code == http.StatusOK
}

// credsRefusedByCLI runs `vault read -format=json scanner/creds/<role>` as
// an operator would and checks that it fails with HTTP want and an error
// naming each of mention (case-insensitive); it returns the error output.
// A lease issued anyway is revoked at the end, and only its service
// account (never its token) is reported.
func credsRefusedByCLI(t *testing.T, role string, want int, mention ...string) string {
	t.Helper()
	res := vaultCLI(t, "read", "-format=json", stack.Mount+"/creds/"+role)
	if res.ExitCode == 0 {
		sec, err := stack.ParseCLISecret(res.Stdout)
		if err != nil {
			t.Fatalf("vault read creds/%s: exit 0 but unparsable output: %v", role, err)
		}
		revokeAtEnd(t, sec.LeaseID)
		sub := jwtClaims(t, sec.Data["service_account_token"])["sub"]
		t.Errorf("vault read creds/%s: issued lease %s, a token for %v; want HTTP %d", role, sec.LeaseID, sub, want)
		return ""
	}
	out := strings.TrimSpace(res.Stderr)
	// The CLI's status and error lines, on one line.
	if i := strings.Index(out, "Code: "); i >= 0 {
		out = strings.Join(strings.Fields(out[i:]), " ")
	}
	assertNoJWTIn(t, "vault read creds/"+role, res.Stdout+res.Stderr, st.TokenRequesterJWT)
	if !strings.Contains(out, fmt.Sprintf("Code: %d", want)) {
		t.Errorf("vault read creds/%s: want HTTP %d: exit %d: %s", role, want, res.ExitCode, out)
	}
	for _, m := range mention {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(m)) {
			t.Errorf("vault read creds/%s: the error does not mention %q: %s", role, m, out)
		}
	}
	return out
}

// roleSecretsIn lists the bound Secrets of role in ns on the first cluster.
func roleSecretsIn(t *testing.T, ns, role string) []string {
	t.Helper()
	secs, err := st.First.ManagedSecrets(testCtx(t, 30*time.Second), ns, role)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range secs {
		out = append(out, s.Name)
	}
	return out
}

// createServiceAccount creates ns/name on the first cluster with the admin
// client and deletes it when the test ends.
func createServiceAccount(t *testing.T, ns, name string) {
	t.Helper()
	cs := adminClient(t)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(testCtx(t, time.Minute), sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service account %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cs.CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("cleanup: delete service account %s/%s: %v", ns, name, err)
		}
	})
}

func adminClient(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// applyAtEnd applies an RBAC manifest on the first cluster with the admin
// kubeconfig and deletes its objects when the test ends.
func applyAtEnd(t *testing.T, name, manifest string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(p, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if res, err := st.KubectlAdmin(testCtx(t, time.Minute), "apply", "-f", p); err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl apply %s: %v %s", name, err, res)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.KubectlAdmin(ctx, "delete", "--ignore-not-found", "-f", p); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: kubectl delete %s: %v %s", name, err, res)
		}
	})
}

// grantRequester gives the token requester rules on top of what it holds,
// in ns (a Role) or cluster-wide (ns "", a ClusterRole), under name, until
// the test ends, and waits until the authorizer applies the first rule's
// first verb and resource.
func grantRequester(t *testing.T, name, ns string, rules []rbacv1.PolicyRule) {
	t.Helper()
	kind, bindingKind, meta := "Role", "RoleBinding", fmt.Sprintf("{name: %s, namespace: %s}", name, ns)
	if ns == "" {
		kind, bindingKind, meta = "ClusterRole", "ClusterRoleBinding", fmt.Sprintf("{name: %s}", name)
	}
	rulesJSON, err := json.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: %[1]s
metadata: %[3]s
rules: %[4]s
---
apiVersion: rbac.authorization.k8s.io/v1
kind: %[2]s
metadata: %[3]s
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: %[1]s, name: %[5]s}
subjects:
- {kind: ServiceAccount, name: %[6]s, namespace: %[7]s}
`, kind, bindingKind, meta, rulesJSON, name, stack.RequesterSA, stack.RequesterNamespace)
	applyAtEnd(t, name, manifest)
	first := rules[0]
	if err := waitRequesterCan(testCtx(t, time.Minute), true, first.Verbs[0], first.Resources[0], ns); err != nil {
		t.Fatal(err)
	}
}

// policyRules renders rules as generated_role_rules (JSON, a form the
// field accepts).
func policyRules(t *testing.T, rules ...rbacv1.PolicyRule) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"rules": rules})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// numbered returns n names prefix-0 … prefix-(n-1).
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// expansion is what a bound on generated_role_rules counts: verbs ×
// apiGroups × resources × resourceNames (1 when none), summed over rules.
func expansion(rules []rbacv1.PolicyRule) int {
	n := 0
	for _, r := range rules {
		names := max(len(r.ResourceNames), 1)
		n += len(r.Verbs) * len(r.APIGroups) * len(r.Resources) * names
	}
	return n
}

// tidyNow runs `vault write scanner/tidy grace=0s` over HTTP (200
// required) and returns its data; neither data nor warnings may hold a JWT.
func tidyNow(t *testing.T, tokens ...string) (map[string]any, time.Duration) {
	t.Helper()
	start := time.Now()
	code, vr := rawVault(t, http.MethodPost, stack.Mount+"/tidy", map[string]any{"grace": "0s"})
	took := time.Since(start)
	assertNoJWTIn(t, "the tidy answer", fmt.Sprint(vr.Data, vr.Warnings, vr.Errors), append(tokens, st.TokenRequesterJWT)...)
	if code != http.StatusOK {
		t.Fatalf("write %s/tidy grace=0s: HTTP %d, want 200: %v", stack.Mount, code, vr.Errors)
	}
	t.Logf("tidy (%s): deleted %v, unverified %v, skipped %v; %d warnings", took.Round(time.Millisecond), vr.Data["deleted"], vr.Data["unverified"], vr.Data["skipped"], len(vr.Warnings))
	return vr.Data, took
}

// strings of a JSON list (nil for anything else).
func stringList(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		out = append(out, str(x))
	}
	return out
}

// secretUID returns the UID of Secret ns/name on the first cluster, "" if
// it does not exist.
func secretUID(t *testing.T, ns, name string) string {
	t.Helper()
	s, err := adminClient(t).CoreV1().Secrets(ns).Get(testCtx(t, 30*time.Second), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("get Secret %s/%s: %v", ns, name, err)
	}
	return string(s.UID)
}

// namespaceUser is attacker (e): a service account with write rights on
// Secrets in one namespace and nothing else; its client acts as it.
func namespaceUser(t *testing.T, ns, name string) *kubernetes.Clientset {
	t.Helper()
	createServiceAccount(t, ns, name)
	applyAtEnd(t, name, fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: %[1]s, namespace: %[2]s}
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "create", "update", "patch", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: %[1]s, namespace: %[2]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: %[1]s}
subjects:
- {kind: ServiceAccount, name: %[1]s, namespace: %[2]s}
`, name, ns))
	ctx := testCtx(t, time.Minute)
	token, err := st.First.CreateToken(ctx, ns, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(st.Kube.RESTConfig(token))
	if err != nil {
		t.Fatal(err)
	}
	// RBAC reaches the authorizer through an informer.
	_, err = stack.Poll(ctx, 20*time.Second, 250*time.Millisecond, func() (bool, error) {
		_, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace user %s/%s never got list secrets: %v", ns, name, err)
	}
	return cs
}

// deleteSecretAtEnd deletes ns/name (admin) when the test ends, whatever
// happened: the suite's final check wants no managed-by Secret left.
func deleteSecretAtEnd(t *testing.T, ns, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cs, err := st.Kube.AdminClient()
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		if err := cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("cleanup: delete Secret %s/%s: %v", ns, name, err)
		}
	})
}

// managedClusterRoles lists the ClusterRoles labelled
// managed-by=vault-plugin-scanner and annotated with role.
func managedClusterRoles(t *testing.T, role string) []rbacv1.ClusterRole {
	t.Helper()
	list, err := adminClient(t).RbacV1().ClusterRoles().List(testCtx(t, 30*time.Second), metav1.ListOptions{LabelSelector: stack.ManagedByLabel})
	if err != nil {
		t.Fatal(err)
	}
	var out []rbacv1.ClusterRole
	for _, cr := range list.Items {
		if cr.Annotations[stack.RoleAnnotation] == role {
			out = append(out, cr)
		}
	}
	return out
}

// unverifiedEntry is how tidy names an object it may not delete.
func unverifiedEntry(kind, ns, name string) string { return kind + " " + ns + "/" + name }

// readCheck GETs clusters/<name>/check (200 required) and returns its data
// and how long it took; the answer may hold no JWT.
func readCheck(t *testing.T, name string) (map[string]any, time.Duration) {
	t.Helper()
	start := time.Now()
	code, vr := rawVault(t, http.MethodGet, stack.Mount+"/clusters/"+name+"/check", nil)
	took := time.Since(start)
	assertNoJWTIn(t, "the check answer", fmt.Sprint(vr.Data, vr.Warnings, vr.Errors), st.TokenRequesterJWT)
	if code != http.StatusOK {
		t.Fatalf("clusters/%s/check: HTTP %d after %s, want 200: %v", name, code, secs(took), vr.Errors)
	}
	return vr.Data, took
}

// roleError is check's role_errors entry for role ("" if none).
func roleError(check map[string]any, role string) string {
	errs, _ := check["role_errors"].(map[string]any)
	return str(errs[role])
}
