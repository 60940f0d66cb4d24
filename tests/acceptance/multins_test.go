package acceptance

import (
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// teamC is a namespace the plugin holds no rights in (deploy/ grants it
// none); the test creates it.
const teamC = "team-c"

// One credential for team-a and team-b (kubernetes_namespaces): a single
// per-lease ServiceAccount in team-a, a RoleBinding to pod-reader in each;
// kubectl lists pods in both and is Forbidden in team-c; revoke leaves no
// object in any of them. Asking for team-a,team-c, where the plugin may not
// create or delete bindings, is a 502 and creates nothing. Parallel-safe:
// it counts only its own role's objects.
func TestMultiNamespaceCredential(t *testing.T) {
	t.Parallel()
	ensureEphemeralSetup(t)
	done := step(t, "namespace %s (no plugin RBAC) as admin", teamC)
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamC}}
	if _, err := cs.CoreV1().Namespaces().Create(testCtx(t, time.Minute), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", teamC, err)
	}
	role := "multins-pod-reader"
	writeEphemeralRole(t, role, map[string]any{
		"kubernetes_role_name":          podReader,
		"allowed_kubernetes_namespaces": teamA + "," + teamB + "," + teamC,
		"ttl":                           "10m",
	})
	all := []string{teamA, teamB, teamC}
	done()

	done = step(t, "vault read %s/creds/%s kubernetes_namespaces=%s,%s", stack.Mount, role, teamA, teamB)
	sec := vaultReadCreds(t, stack.Mount+"/creds/"+role, "kubernetes_namespaces="+teamA+","+teamB)
	name, token := sec.Data["service_account_name"], sec.Data["service_account_token"]
	if sec.Data["service_account_namespace"] != teamA || sec.Data["kubernetes_namespaces"] != teamA+","+teamB {
		t.Errorf("service_account_namespace %q, kubernetes_namespaces %q; want %s and %s,%s", sec.Data["service_account_namespace"], sec.Data["kubernetes_namespaces"], teamA, teamA, teamB)
	}
	if sub := jwtClaims(t, token)["sub"]; sub != "system:serviceaccount:"+teamA+":"+name {
		t.Errorf("JWT sub %v, want the per-lease ServiceAccount in %s", sub, teamA)
	}
	done()

	done = step(t, "one ServiceAccount in %s, a RoleBinding to %s in %s and in %s naming it, nothing in %s", teamA, podReader, teamA, teamB, teamC)
	a, b := managedObjects(t, teamA, role), managedObjects(t, teamB, role)
	if a.counts() != [3]int{1, 1, 0} || b.counts() != [3]int{0, 1, 0} {
		t.Fatalf("%s: %s; %s: %s; want 1 ServiceAccount + 1 RoleBinding, then 1 RoleBinding", teamA, a, teamB, b)
	}
	if o := managedObjects(t, teamC, role); o.counts() != [3]int{} {
		t.Errorf("%s: %s, want nothing", teamC, o)
	}
	sa := a.ServiceAccounts[0]
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: podReader}
	wantSubj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: teamA}}
	for _, rb := range []rbacv1.RoleBinding{a.RoleBindings[0], b.RoleBindings[0]} {
		if sa.Name != name || rb.Name != name || rb.RoleRef != wantRef || !reflect.DeepEqual(rb.Subjects, wantSubj) {
			t.Errorf("RoleBinding %s/%s: roleRef %+v subjects %+v, want %+v and %+v", rb.Namespace, rb.Name, rb.RoleRef, rb.Subjects, wantRef, wantSubj)
		}
	}
	ownedBySA(t, "RoleBinding", a.RoleBindings[0].ObjectMeta, sa)
	if refs := b.RoleBindings[0].OwnerReferences; len(refs) != 0 {
		t.Errorf("the %s RoleBinding has ownerReferences %+v; none can cross namespaces", teamB, refs)
	}
	done()

	done = step(t, "kubectl with the kubeconfig: pods listed in %s (the context) and %s, Forbidden in %s", teamA, teamB, teamC)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(sec.Data["kubeconfig"])); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-n", teamA}, {"-n", teamB}, nil} {
		r := kubectl(t, kc, append([]string{"get", "pods", "-o", "name"}, args...)...)
		if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod {
			t.Errorf("kubectl get pods %v: want exit 0 and pod/%s: %s", args, stack.TargetPod, r)
		}
	}
	r := kubectl(t, kc, "get", "pods", "-n", teamC)
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, "Forbidden") {
		t.Errorf("kubectl get pods -n %s: want Forbidden: %s", teamC, r)
	}
	done()

	done = step(t, "vault lease revoke: no object of the role left in %v, the token rejected within 15 s", all)
	start := time.Now()
	mustVault(t, "lease", "revoke", "-sync", sec.LeaseID)
	for _, n := range all {
		waitNoManaged(t, n, role, 5*time.Second)
	}
	assertNoManaged(t, role, all...)
	took := waitPodsStatus(t, token, teamB, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("objects gone at once, token rejected (401) %s after revoke", secs(took))
	done()

	done = step(t, "creds kubernetes_namespaces=%s,%s (the plugin has no rights in %s): 502, nothing created", teamA, teamC, teamC)
	ve := credsError(t, role, map[string][]string{"kubernetes_namespaces": {teamA + "," + teamC}})
	if ve.Status != http.StatusBadGateway || !strings.Contains(ve.Text, `rolebindings in namespace "team-c"`) {
		t.Errorf("want 502 naming the rolebindings right in %s; got %d %s", teamC, ve.Status, ve.Text)
	}
	t.Logf("refused: HTTP %d %s", ve.Status, ve.Text)
	assertNoManaged(t, role, all...)
	done()

	done = step(t, "clusters/%s/check: namespaces names what %s lacks", stack.ClusterName, teamC)
	chk, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+stack.ClusterName+"/check")
	if err != nil || chk == nil {
		t.Fatalf("check: %v", err)
	}
	perNS, _ := chk.Data["namespaces"].(map[string]any)
	missingC, _ := perNS[teamC].([]any)
	if !anyContains(missingC, `create rolebindings in namespace "team-c"`) {
		t.Errorf("check namespaces[%s] = %v, want it to name create rolebindings", teamC, perNS[teamC])
	}
	for _, n := range []string{teamA, teamB} {
		if m, ok := perNS[n].([]any); !ok || anyContains(m, "rolebindings in namespace") {
			t.Errorf("check namespaces[%s] = %v, want a list without the binding rights", n, perNS[n])
		}
	}
	done()
}

func anyContains(list []any, want string) bool {
	for _, v := range list {
		if s, _ := v.(string); strings.Contains(s, want) {
			return true
		}
	}
	return false
}
