package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Namespaces of the target-scoped tests, created by them: the plugin's
// rights there are exactly what clusters/<name>/rbac generates for the
// target roles (applyGeneratedRBAC), so nothing else counts on them.
const (
	tgtA = "targets-a"
	tgtB = "targets-b"
)

// targetCreds is `vault read -format=json` of a target-scoped credential:
// targets is a list, which stack.CLISecret's string map cannot hold.
type targetCreds struct {
	LeaseID string `json:"lease_id"`
	Data    struct {
		Kubeconfig     string `json:"kubeconfig"`
		Token          string `json:"service_account_token"`
		ServiceAccount string `json:"service_account_name"`
		Namespace      string `json:"service_account_namespace"`
		Targets        []struct {
			Namespace  string   `json:"namespace"`
			Pod        string   `json:"pod"`
			Containers []string `json:"containers"`
		} `json:"targets"`
	} `json:"data"`
	Warnings []string `json:"warnings"`
}

func readTargetCreds(t *testing.T, role string, params ...string) targetCreds {
	t.Helper()
	res := mustVault(t, append([]string{"read", "-format=json", stack.Mount + "/creds/" + role}, params...)...)
	var c targetCreds
	if err := json.Unmarshal([]byte(res.Stdout), &c); err != nil {
		t.Fatalf("parse vault read output: %v\n%s", err, res.Stdout)
	}
	revokeAtEnd(t, c.LeaseID)
	return c
}

// targets are the resolved targets as namespace/pod.
func (c targetCreds) targets() []string {
	var out []string
	for _, tg := range c.Data.Targets {
		out = append(out, tg.Namespace+"/"+tg.Pod)
	}
	return out
}

// ensureTargetSetup creates targets-a (pods web-0, web-1 labelled app=web,
// db-0 app=db) and targets-b (web-2, app=web), and grants the token
// requester there what roles scoped to targets need: per-lease
// ServiceAccounts, Roles and RoleBindings, tokens, reading pods, and the
// exec profile's rights (so it may create Roles granting them without
// escalate).
func ensureTargetSetup(t *testing.T) {
	t.Helper()
	done := step(t, "namespaces %s and %s, pods (Pending: no nodes), the token requester's rights there", tgtA, tgtB)
	defer done()
	ctx := testCtx(t, 2*time.Minute)
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]map[string]string{tgtA: {"web-0": "web", "web-1": "web", "db-0": "db"}, tgtB: {"web-2": "web"}}
	for _, ns := range []string{tgtA, tgtB} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		// The ServiceAccount admission plugin wants the pods' account.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: stack.TargetPod, Namespace: ns}}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		for name, app := range pods[ns] {
			if err := createLabelledPod(ctx, ns, name, map[string]string{"app": app}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// applyGeneratedRBAC reads clusters/<name>/rbac and applies, as the admin,
// exactly its Roles and RoleBindings in namespaces: the token requester's
// rights there are then what the plugin says its roles need, nothing more.
func applyGeneratedRBAC(t *testing.T, namespaces ...string) {
	t.Helper()
	done := step(t, "apply %s/clusters/%s/rbac's Roles and RoleBindings in %v", stack.Mount, stack.ClusterName, namespaces)
	defer done()
	ctx := testCtx(t, 2*time.Minute)
	sec, err := vaultClient(t).Logical().ReadWithContext(ctx, stack.Mount+"/clusters/"+stack.ClusterName+"/rbac")
	if err != nil || sec == nil {
		t.Fatalf("read clusters/%s/rbac: %v", stack.ClusterName, err)
	}
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	manifests, _ := sec.Data["manifests"].(string)
	applied := 0
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var head metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("a generated document does not parse: %v", err)
		}
		switch head.Kind {
		case "Role":
			var role rbacv1.Role
			if err := yaml.UnmarshalStrict([]byte(doc), &role); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(namespaces, role.Namespace) {
				continue
			}
			_, err := cs.RbacV1().Roles(role.Namespace).Create(ctx, &role, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				_, err = cs.RbacV1().Roles(role.Namespace).Update(ctx, &role, metav1.UpdateOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			applied++
		case "RoleBinding":
			var rb rbacv1.RoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &rb); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(namespaces, rb.Namespace) {
				continue
			}
			if _, err := cs.RbacV1().RoleBindings(rb.Namespace).Create(ctx, &rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			applied++
		}
	}
	if applied != 2*len(namespaces) {
		t.Fatalf("applied %d generated Roles and RoleBindings in %v, want one of each per namespace", applied, namespaces)
	}
	for _, ns := range namespaces {
		if err := waitRequesterCan(ctx, true, "create", "pods/exec", ns); err != nil {
			t.Fatal(err)
		}
	}
}

func createLabelledPod(ctx context.Context, ns, name string, lbls map[string]string) error {
	return createLabelledPodIn(ctx, st.Kube, ns, name, lbls)
}

// createLabelledPodIn is createLabelledPod in kube's cluster.
func createLabelledPodIn(ctx context.Context, kube *stack.KubeAPIServer, ns, name string, lbls map[string]string) error {
	cs, err := kube.AdminClient()
	if err != nil {
		return err
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls},
		Spec: corev1.PodSpec{
			ServiceAccountName:           stack.TargetPod,
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}
	// The admission plugin may not see a new service account at once: retry.
	_, err = stack.Poll(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	return nil
}

// canI asks, with the issued kubeconfig, whether it may verb pods/<name>
// (with subresource, if any) in ns.
func canI(t *testing.T, kc, ns, verb, pod, subresource string) string {
	t.Helper()
	args := []string{"auth", "can-i", verb, "pods/" + pod, "-n", ns}
	if subresource != "" {
		args = append(args, "--subresource="+subresource)
	}
	return strings.TrimSpace(kubectl(t, kc, args...).Stdout)
}

// A credential for two of three pods of targets-a: `kubectl auth can-i`
// with its kubeconfig says yes to pods/exec on the two, no on the third, on
// a pod of targets-b and to listing pods; `kubectl exec` into the third is
// Forbidden, into a target it gets past authorization (the pod never runs:
// no nodes). A selector over both namespaces resolves to the app=web pods
// only. A missing pod and a selector matching more than max_targets are
// 400s that create nothing. Revoke leaves nothing, and the token is
// rejected.
func TestTargetScopedCredential(t *testing.T) {
	t.Parallel()
	ensureEphemeralSetup(t) // the token requester's base rights
	ensureTargetSetup(t)
	role := "targets-exec"
	writeEphemeralRole(t, role, map[string]any{
		"target_profiles":               "exec",
		"allowed_kubernetes_namespaces": tgtA + "," + tgtB,
		"max_targets":                   3,
		"ttl":                           "10m",
	})
	writeEphemeralRole(t, role+"-two", map[string]any{"target_profiles": "exec", "allowed_kubernetes_namespaces": tgtA + "," + tgtB, "max_targets": 2})
	writeEphemeralRole(t, role+"-debug", map[string]any{"target_profiles": "debug", "allowed_kubernetes_namespaces": tgtA, "ttl": "10m"})
	applyGeneratedRBAC(t, tgtA, tgtB)
	both := []string{tgtA, tgtB}

	done := step(t, "vault read %s/creds/%s kubernetes_namespace=%s targets=web-0,web-1", stack.Mount, role, tgtA)
	c := readTargetCreds(t, role, "kubernetes_namespace="+tgtA, "targets=web-0,web-1")
	if got, want := c.targets(), []string{tgtA + "/web-0", tgtA + "/web-1"}; !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	if len(c.Data.Targets) > 0 && !slices.Equal(c.Data.Targets[0].Containers, []string{"app"}) {
		t.Errorf("containers %v, want [app]", c.Data.Targets[0].Containers)
	}
	if c.Data.Namespace != tgtA || !strings.Contains(strings.Join(c.Warnings, "\n"), "created after issue is not covered") {
		t.Errorf("service_account_namespace %q, warnings %q", c.Data.Namespace, c.Warnings)
	}
	objs := managedObjects(t, tgtA, role)
	if objs.counts() != [3]int{1, 1, 1} {
		t.Fatalf("%s: %s, want one ServiceAccount, RoleBinding and Role", tgtA, objs)
	}
	for _, r := range objs.Roles[0].Rules {
		if !slices.Equal(r.ResourceNames, []string{"web-0", "web-1"}) {
			t.Errorf("Role rule %+v does not name exactly web-0 and web-1", r)
		}
	}
	done()

	done = step(t, "kubectl auth can-i with the issued kubeconfig: exec into web-0 and web-1 only")
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(c.Data.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct{ ns, verb, pod, sub, want string }{
		{tgtA, "create", "web-0", "exec", "yes"},
		{tgtA, "create", "web-1", "exec", "yes"},
		{tgtA, "get", "web-0", "", "yes"},
		{tgtA, "get", "web-1", "log", "yes"},
		{tgtA, "create", "db-0", "exec", "no"},
		{tgtA, "get", "db-0", "", "no"},
		{tgtB, "create", "web-2", "exec", "no"},
		{tgtA, "create", "web-0", "attach", "no"},
		{tgtA, "delete", "web-0", "", "no"},
	} {
		if got := canI(t, kc, q.ns, q.verb, q.pod, q.sub); got != q.want {
			t.Errorf("can-i %s pods/%s (subresource %q) -n %s = %q, want %q", q.verb, q.pod, q.sub, q.ns, got, q.want)
		}
	}
	if got := strings.TrimSpace(kubectl(t, kc, "auth", "can-i", "list", "pods").Stdout); got != "no" {
		t.Errorf("can-i list pods = %q, want no", got)
	}
	done()

	done = step(t, "kubectl exec: db-0 Forbidden, web-0 past authorization")
	r := kubectl(t, kc, "exec", "db-0", "--", "true")
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, "Forbidden") && !strings.Contains(r.Stderr, "forbidden") {
		t.Errorf("kubectl exec db-0: want Forbidden: %s", r)
	}
	r = kubectl(t, kc, "exec", "web-0", "-c", "app", "--", "true")
	if strings.Contains(strings.ToLower(r.Stderr), "forbidden") {
		t.Errorf("kubectl exec web-0: refused by authorization: %s", r)
	}
	t.Logf("kubectl exec web-0 (a Pending pod) ends with: %s", strings.TrimSpace(r.Stderr))
	done()

	done = step(t, "vault lease revoke: nothing left in %v, the token rejected within 15 s", both)
	start := time.Now()
	mustVault(t, "lease", "revoke", "-sync", c.LeaseID)
	for _, ns := range both {
		waitNoManaged(t, ns, role, 5*time.Second)
	}
	took := waitPodsStatus(t, c.Data.Token, tgtA, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("token rejected (401) %s after revoke", secs(took))
	done()

	done = step(t, "target_selector=app=web over %s,%s: web-0, web-1, web-2; db-0 not covered", tgtA, tgtB)
	c = readTargetCreds(t, role, "kubernetes_namespaces="+tgtA+","+tgtB, "target_selector=app=web")
	if got, want := c.targets(), []string{tgtA + "/web-0", tgtA + "/web-1", tgtB + "/web-2"}; !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	if err := stack.WriteFile0600(kc, []byte(c.Data.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	if got := canI(t, kc, tgtB, "create", "web-2", "exec"); got != "yes" {
		t.Errorf("can-i exec web-2 = %q, want yes", got)
	}
	if got := canI(t, kc, tgtA, "create", "db-0", "exec"); got != "no" {
		t.Errorf("can-i exec db-0 = %q, want no", got)
	}
	mustVault(t, "lease", "revoke", "-sync", c.LeaseID)
	for _, ns := range both {
		waitNoManaged(t, ns, role, 5*time.Second)
	}
	done()

	done = step(t, "a missing pod, a selector matching more than max_targets: 400, nothing created")
	ve := credsError(t, role, map[string][]string{"targets": {tgtA + "/web-9"}})
	if ve.Status != http.StatusBadRequest || !strings.Contains(ve.Text, "does not exist") {
		t.Errorf("missing pod: %d %s", ve.Status, ve.Text)
	}
	ve = credsError(t, role+"-two", map[string][]string{"kubernetes_namespaces": {tgtA + "," + tgtB}, "target_selector": {"app=web"}})
	if ve.Status != http.StatusBadRequest || !strings.Contains(ve.Text, "matches more than 2") {
		t.Errorf("selector matching 3 with max_targets=2: %d %s", ve.Status, ve.Text)
	}
	assertNoManaged(t, role, both...)
	assertNoManaged(t, role+"-two", both...)
	done()

	done = step(t, "target_profiles=debug, targets=db-0: add an ephemeral container to db-0 and attach to it, nothing else")
	dc := readTargetCreds(t, role+"-debug", "kubernetes_namespace="+tgtA, "targets=db-0")
	dkc := filepath.Join(t.TempDir(), "kubeconfig-debug")
	if err := stack.WriteFile0600(dkc, []byte(dc.Data.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct{ verb, pod, sub, want string }{
		{"update", "db-0", "ephemeralcontainers", "yes"},
		{"patch", "db-0", "ephemeralcontainers", "yes"},
		{"create", "db-0", "attach", "yes"},
		{"watch", "db-0", "", "yes"},
		{"create", "db-0", "exec", "no"},
		{"update", "web-0", "ephemeralcontainers", "no"},
		{"create", "web-0", "attach", "no"},
	} {
		if got := canI(t, dkc, tgtA, q.verb, q.pod, q.sub); got != q.want {
			t.Errorf("debug credential: can-i %s pods/%s %s: %q, want %q", q.verb, q.pod, q.sub, got, q.want)
		}
	}
	mustVault(t, "lease", "revoke", "-sync", dc.LeaseID)
	assertNoManaged(t, role+"-debug", tgtA)
	done()

	everyGeneratedRuleNeeded(t, tgtA)
}

// everyGeneratedRuleNeeded removes, one at a time, each rule of the
// generated Role in ns and checks that clusters/<name>/check then names a
// permission missing in ns; the Role is restored after each. Other tests
// may change rights elsewhere meanwhile, so only ns's entries count.
func everyGeneratedRuleNeeded(t *testing.T, ns string) {
	t.Helper()
	ctx := testCtx(t, 3*time.Minute)
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	roles := cs.RbacV1().Roles(ns)
	generated, err := roles.Get(ctx, stack.RequesterRole, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the generated Role in %s: %v", ns, err)
	}
	shipped := slices.Clone(generated.Rules)
	setRules := func(rules []rbacv1.PolicyRule) {
		r, err := roles.Get(ctx, stack.RequesterRole, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.Rules = rules
		if _, err := roles.Update(ctx, r, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { setRules(shipped) })
	missingIn := func() []string {
		var out []string
		for _, m := range clusterCheck(t).MissingPermissions {
			if strings.Contains(m, `namespace "`+ns+`"`) {
				out = append(out, m)
			}
		}
		return out
	}
	for i, rule := range shipped {
		done := step(t, "generated Role in %s without rule %d (%v %v): check names what is missing there", ns, i, rule.Verbs, rule.Resources)
		setRules(slices.Delete(slices.Clone(shipped), i, i+1))
		var got []string
		if _, err := stack.Poll(ctx, 15*time.Second, 500*time.Millisecond, func() (bool, error) {
			got = missingIn()
			return len(got) > 0, nil
		}); err != nil {
			t.Errorf("without rule %d (%v %v) check names nothing missing in %s", i, rule.Verbs, rule.Resources, ns)
		} else {
			t.Logf("without rule %d: missing %q", i, got)
		}
		setRules(shipped)
		if _, err := stack.Poll(ctx, 15*time.Second, 500*time.Millisecond, func() (bool, error) {
			return len(missingIn()) == 0, nil
		}); err != nil {
			t.Fatalf("check still names %q in %s after the Role was restored", missingIn(), ns)
		}
		done()
	}
}
