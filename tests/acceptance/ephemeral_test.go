package acceptance

import (
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// The ephemeral-mode tests run one after the other, not in
// parallel: they count the plugin's objects in team-a and team-b exactly,
// and TestEphemeralTokenRequestFailure changes the token requester's RBAC
// there.

// Modes 2: kubernetes_role_name=pod-reader for team-a or team-b. The lease's
// kubeconfig lists pods in team-a and is Forbidden in team-b; the lease owns
// one ServiceAccount and one RoleBinding (owned by the ServiceAccount);
// `vault lease revoke` deletes both and the token is rejected within 15 s.
func TestEphemeralExistingRole(t *testing.T) {
	ensureEphemeralSetup(t)
	role := "eph-pod-reader"
	writeEphemeralRole(t, role, map[string]any{
		"kubernetes_role_name":          podReader,
		"allowed_kubernetes_namespaces": teamA + "," + teamB,
		"ttl":                           "10m",
	})

	done := step(t, "vault read -format=json %s/creds/%s kubernetes_namespace=%s", stack.Mount, role, teamA)
	sec := vaultReadCreds(t, stack.Mount+"/creds/"+role, "kubernetes_namespace="+teamA)
	name := sec.Data["service_account_name"]
	token := sec.Data["service_account_token"]
	t.Logf("lease %s (%d s, renewable %v): service account %s/%s, %s", sec.LeaseID, sec.LeaseDuration, sec.Renewable, sec.Data["service_account_namespace"], name, sec.Data["credential_id"])
	if sec.LeaseDuration != 600 || sec.Renewable {
		t.Errorf("lease_duration=%d renewable=%v, want 600 and false", sec.LeaseDuration, sec.Renewable)
	}
	if sec.Data["service_account_namespace"] != teamA {
		t.Errorf("service_account_namespace %q, want %s", sec.Data["service_account_namespace"], teamA)
	}
	if !regexp.MustCompile(`^vault-eph-pod-reader-[a-z0-9]{10}$`).MatchString(name) {
		t.Fatalf("service_account_name %q, want vault-eph-pod-reader-<10 random>", name)
	}
	claims := jwtClaims(t, token)
	if sub := claims["sub"]; sub != "system:serviceaccount:"+teamA+":"+name {
		t.Errorf("JWT sub %v, want system:serviceaccount:%s:%s", sub, teamA, name)
	}
	if jti, _ := claims["jti"].(string); jti == "" || sec.Data["credential_id"] != "JTI="+jti {
		t.Errorf("credential_id %q, JWT jti %q", sec.Data["credential_id"], jti)
	}
	done()

	done = step(t, "%s holds exactly one managed ServiceAccount and one RoleBinding (owned by it); %s none", teamA, teamB)
	objs := managedObjects(t, teamA, role)
	if objs.counts() != [3]int{1, 1, 0} {
		t.Fatalf("%s: want 1 ServiceAccount, 1 RoleBinding, 0 Roles; have %s", teamA, objs)
	}
	sa, rb := objs.ServiceAccounts[0], objs.RoleBindings[0]
	if sa.Name != name || rb.Name != name {
		t.Errorf("ServiceAccount %q, RoleBinding %q; want both named %q", sa.Name, rb.Name, name)
	}
	for what, m := range map[string]metav1.ObjectMeta{"ServiceAccount": sa.ObjectMeta, "RoleBinding": rb.ObjectMeta} {
		if m.Labels["app.kubernetes.io/managed-by"] != "vault-plugin-scanner" {
			t.Errorf("%s labels %v, want app.kubernetes.io/managed-by=vault-plugin-scanner", what, m.Labels)
		}
		if m.Annotations["vault-plugin-scanner/cluster"] != stack.ClusterName {
			t.Errorf("%s annotations %v, want vault-plugin-scanner/cluster=%s", what, m.Annotations, stack.ClusterName)
		}
	}
	if len(sa.OwnerReferences) != 0 {
		t.Errorf("the ServiceAccount has ownerReferences %+v, want none (it owns the rest)", sa.OwnerReferences)
	}
	ownedBySA(t, "RoleBinding", rb.ObjectMeta, sa)
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: podReader}
	wantSubj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: teamA}}
	if rb.RoleRef != wantRef || !reflect.DeepEqual(rb.Subjects, wantSubj) {
		t.Errorf("RoleBinding roleRef %+v subjects %+v, want %+v and %+v", rb.RoleRef, rb.Subjects, wantRef, wantSubj)
	}
	if o := managedObjects(t, teamB, ""); o.counts() != [3]int{} {
		t.Errorf("%s: want no managed objects, have %s", teamB, o)
	}
	done()

	done = step(t, "kubectl with the kubeconfig: pods in %s listed, %s Forbidden", teamA, teamB)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(sec.Data["kubeconfig"])); err != nil {
		t.Fatal(err)
	}
	r := kubectl(t, kc, "get", "pods", "-n", teamA, "-o", "name")
	if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod {
		t.Fatalf("kubectl get pods -n %s: want exit 0 and pod/%s: %s", teamA, stack.TargetPod, r)
	}
	// The context's namespace is the requested one.
	r = kubectl(t, kc, "get", "pods", "-o", "name")
	if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "pod/"+stack.TargetPod {
		t.Fatalf("kubectl get pods (context namespace): want exit 0 and pod/%s: %s", stack.TargetPod, r)
	}
	r = kubectl(t, kc, "get", "pods", "-n", teamB)
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, "Forbidden") ||
		!strings.Contains(r.Stderr, `"system:serviceaccount:`+teamA+":"+name+`"`) {
		t.Fatalf("kubectl get pods -n %s: want non-zero exit and Forbidden for the lease's service account: %s", teamB, r)
	}
	t.Logf("team-b: %s", strings.TrimSpace(r.Stderr))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "pods", "-n", teamA}, "yes"},
		{[]string{"get", "pods/" + stack.TargetPod, "-n", teamA}, "yes"},
		{[]string{"delete", "pods", "-n", teamA}, "no"},
		{[]string{"create", "pods", "--subresource=exec", "-n", teamA}, "no"},
		{[]string{"get", "secrets", "-n", teamA}, "no"},
		{[]string{"list", "pods", "-n", teamB}, "no"},
		{[]string{"list", "pods", "-n", stack.ScannerNamespace}, "no"},
	} {
		r = kubectl(t, kc, append([]string{"auth", "can-i"}, c.args...)...)
		if got := strings.TrimSpace(r.Stdout); got != c.want {
			t.Errorf("kubectl auth can-i %v = %q, want %q (%s)", c.args, got, c.want, r)
		}
	}
	done()

	done = step(t, "vault lease revoke: the ServiceAccount and RoleBinding are gone, the token is rejected within 15 s")
	ctx := testCtx(t, time.Minute)
	if code := podsStatus(t, ctx, token, teamA); code != http.StatusOK {
		t.Fatalf("before revoke: listing pods in %s: HTTP %d, want 200", teamA, code)
	}
	start := time.Now()
	mustVault(t, "lease", "revoke", sec.LeaseID)
	t.Logf("revoke returned after %s", secs(time.Since(start)))
	// The CLI revokes asynchronously (no -sync): Vault queues the revocation.
	waitNoManaged(t, teamA, "", 5*time.Second)
	t.Logf("ServiceAccount and RoleBinding deleted %s after revoke", secs(time.Since(start)))
	assertNoManaged(t, "", teamA, teamB)
	took := waitPodsStatus(t, token, teamA, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("token rejected (401) %s after revoke", secs(took))
	done()
}

// Mode 3: generated_role_rules with allowed_kubernetes_namespace_selector
// team=a. team-b (team=b) is refused with a 400 naming the labels and
// nothing is created; team-a gets a Role, a ServiceAccount and a RoleBinding,
// and kubectl lists pods there.
func TestEphemeralGeneratedRoleSelector(t *testing.T) {
	ensureEphemeralSetup(t)
	role := "eph-generated"
	writeEphemeralRole(t, role, map[string]any{
		"generated_role_rules":                  podReaderRules,
		"allowed_kubernetes_namespace_selector": "team=a",
	})

	done := step(t, "creds in %s (labels team=b): 400 naming the labels, nothing created", teamB)
	e := credsError(t, role, url.Values{"kubernetes_namespace": {teamB}})
	t.Logf("HTTP %d: %s", e.Status, e.Text)
	if e.Status != http.StatusBadRequest || !strings.Contains(e.Text, "labels") || !strings.Contains(e.Text, "team=a") {
		t.Errorf("want HTTP 400 mentioning the labels and team=a, got %d: %s", e.Status, e.Text)
	}
	assertNoManaged(t, role, teamA, teamB)
	done()

	done = step(t, "creds in %s: a Role, a ServiceAccount and a RoleBinding; kubectl lists pods there", teamA)
	c := readCreds(t, role, url.Values{"kubernetes_namespace": {teamA}})
	name := c.str("service_account_name")
	if ns := c.str("service_account_namespace"); ns != teamA {
		t.Errorf("service_account_namespace %q, want %s", ns, teamA)
	}
	objs := managedObjects(t, teamA, role)
	if objs.counts() != [3]int{1, 1, 1} {
		t.Fatalf("%s: want 1 ServiceAccount, 1 RoleBinding, 1 Role; have %s", teamA, objs)
	}
	sa, rb, r := objs.ServiceAccounts[0], objs.RoleBindings[0], objs.Roles[0]
	if sa.Name != name || rb.Name != name || r.Name != name {
		t.Errorf("ServiceAccount %q, RoleBinding %q, Role %q; want all named %q", sa.Name, rb.Name, r.Name, name)
	}
	wantRules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}}
	if !reflect.DeepEqual(r.Rules, wantRules) {
		t.Errorf("generated Role rules %+v, want %+v", r.Rules, wantRules)
	}
	if want := (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}); rb.RoleRef != want {
		t.Errorf("RoleBinding roleRef %+v, want %+v", rb.RoleRef, want)
	}
	ownedBySA(t, "Role", r.ObjectMeta, sa)
	ownedBySA(t, "RoleBinding", rb.ObjectMeta, sa)
	if o := managedObjects(t, teamB, ""); o.counts() != [3]int{} {
		t.Errorf("%s: want no managed objects, have %s", teamB, o)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(kc, []byte(c.Kubeconfig)); err != nil {
		t.Fatal(err)
	}
	res := kubectl(t, kc, "get", "pods", "-o", "name")
	if res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "pod/"+stack.TargetPod {
		t.Fatalf("kubectl get pods (context namespace %s): want exit 0 and pod/%s: %s", teamA, stack.TargetPod, res)
	}
	res = kubectl(t, kc, "get", "pods", "-n", teamB)
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "Forbidden") {
		t.Fatalf("kubectl get pods -n %s: want Forbidden: %s", teamB, res)
	}
	done()

	done = step(t, "revoke: Role, ServiceAccount and RoleBinding gone, token rejected within 15 s")
	start := time.Now()
	if err := vaultClient(t).Sys().RevokeWithContext(testCtx(t, time.Minute), c.LeaseID); err != nil {
		t.Fatalf("revoke %s: %v", c.LeaseID, err)
	}
	assertNoManaged(t, "", teamA, teamB)
	took := waitPodsStatus(t, c.Token, teamA, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("token rejected %s after revoke", secs(took))
	done()
}

// A TokenRequest that fails after the ServiceAccount (and the generated
// Role and the RoleBinding) exist: creds fails with "forbidden" and the
// plugin deletes all three. The token requester's Role in team-a loses
// `create serviceaccounts/token` for the test and gets it back after.
func TestEphemeralTokenRequestFailure(t *testing.T) {
	ensureEphemeralSetup(t)
	role := "eph-tokenreq-fail"
	writeEphemeralRole(t, role, map[string]any{
		"generated_role_rules":          podReaderRules,
		"allowed_kubernetes_namespaces": teamA,
	})
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	roles := cs.RbacV1().Roles(teamA)
	setRules := func(rules []rbacv1.PolicyRule) error {
		ctx := testCtx(t, time.Minute)
		r, err := roles.Get(ctx, ephemeralRBAC, metav1.GetOptions{})
		if err != nil {
			return err
		}
		r.Rules = rules
		_, err = roles.Update(ctx, r, metav1.UpdateOptions{})
		return err
	}

	done := step(t, "remove create serviceaccounts/token from Role %s/%s", teamA, ephemeralRBAC)
	orig, err := roles.Get(testCtx(t, time.Minute), ephemeralRBAC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shipped := orig.Rules
	t.Cleanup(func() {
		// Restore even if the test failed half-way; the next tests need it.
		if err := setRules(shipped); err != nil {
			t.Errorf("cleanup: restore Role %s/%s: %v", teamA, ephemeralRBAC, err)
		}
		if err := waitRequesterCan(testCtx(t, time.Minute), true, "create", "serviceaccounts/token", teamA); err != nil {
			t.Error(err)
		}
	})
	var reduced []rbacv1.PolicyRule
	for _, r := range shipped {
		if !slices.Contains(r.Resources, "serviceaccounts/token") {
			reduced = append(reduced, r)
		}
	}
	if len(reduced) != len(shipped)-1 {
		t.Fatalf("Role %s/%s: no single serviceaccounts/token rule in %+v", teamA, ephemeralRBAC, shipped)
	}
	if err := setRules(reduced); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, time.Minute)
	if err := waitRequesterCan(ctx, false, "create", "serviceaccounts/token", teamA); err != nil {
		t.Fatal(err)
	}
	if ok, err := requesterCan(ctx, "create", "serviceaccounts", teamA); err != nil || !ok {
		t.Fatalf("the requester should still create serviceaccounts in %s: %v %v", teamA, ok, err)
	}
	done()

	done = step(t, "creds in %s: fails with forbidden; no ServiceAccount, RoleBinding or Role left", teamA)
	e := credsError(t, role, nil)
	t.Logf("HTTP %d: %s", e.Status, e.Text)
	if e.Status != http.StatusBadGateway || !strings.Contains(strings.ToLower(e.Text), "forbidden") || !strings.Contains(e.Text, "serviceaccounts/token") {
		t.Fatalf("want HTTP 502 with forbidden on serviceaccounts/token, got %d: %s", e.Status, e.Text)
	}
	if o := managedObjects(t, teamA, ""); o.counts() != [3]int{} {
		t.Errorf("%s after the failed creds: want 0 managed ServiceAccounts, RoleBindings and Roles, have %s", teamA, o)
	}
	assertNoManaged(t, "", teamA, teamB)
	done()

	done = step(t, "kube-apiserver audit: the ServiceAccount, Role and RoleBinding were created and then deleted by the plugin")
	m := regexp.MustCompile(`service account ` + teamA + `/(vault-eph-tokenreq-fail-[a-z0-9]{10})`).FindStringSubmatch(e.Text)
	if m == nil {
		t.Fatalf("the error does not name the lease's service account: %s", e.Text)
	}
	name := m[1]
	want := map[string]bool{}
	for _, res := range []string{"serviceaccounts", "roles", "rolebindings"} {
		want["create "+res+"/"+name+" 201"] = false
		want["delete "+res+"/"+name+" 200"] = false
	}
	want["create serviceaccounts/"+name+"/token 403"] = false
	_, err = stack.Poll(testCtx(t, time.Minute), 20*time.Second, 500*time.Millisecond, func() (bool, error) {
		for _, ev := range readJSONLines[kubeAuditEvent](t, st.Kube.AuditLogPath) {
			if ev.User.Username != requesterUser || ev.ObjectRef.Namespace != teamA {
				continue
			}
			k := ev.Verb + " " + ev.ObjectRef.Resource + "/" + ev.ObjectRef.Name
			if ev.ObjectRef.Subresource != "" {
				k += "/" + ev.ObjectRef.Subresource
			}
			k += " " + strconv.Itoa(ev.ResponseStatus.Code)
			if _, ok := want[k]; ok {
				want[k] = true
			}
		}
		for _, seen := range want {
			if !seen {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("kube-apiserver audit log: want every one of these requests by the token requester, seen: %v", want)
	}
	done()

	done = step(t, "restore the Role: creds in %s work again", teamA)
	if err := setRules(shipped); err != nil {
		t.Fatal(err)
	}
	if err := waitRequesterCan(testCtx(t, time.Minute), true, "create", "serviceaccounts/token", teamA); err != nil {
		t.Fatal(err)
	}
	c := readCreds(t, role, nil)
	if code := podsStatus(t, testCtx(t, time.Minute), c.Token, teamA); code != http.StatusOK {
		t.Fatalf("listing pods in %s with the new token: HTTP %d, want 200", teamA, code)
	}
	if err := vaultClient(t).Sys().RevokeWithContext(testCtx(t, time.Minute), c.LeaseID); err != nil {
		t.Fatal(err)
	}
	assertNoManaged(t, "", teamA)
	done()
}

// The per-lease identity shows in the kube-apiserver audit log: requests
// made with the token carry user system:serviceaccount:team-a:<generated
// name> and the credential id from the creds response; the TokenRequest
// carries it as issued-credential-id.
func TestEphemeralAuditLog(t *testing.T) {
	ensureEphemeralSetup(t)
	role := "eph-audit"
	writeEphemeralRole(t, role, map[string]any{
		"kubernetes_role_name":          podReader,
		"allowed_kubernetes_namespaces": teamA,
	})

	done := step(t, "plain GET creds (team-a is the only allowed namespace, so the default); list pods with the token")
	c := readCreds(t, role, nil)
	name := c.str("service_account_name")
	if ns := c.str("service_account_namespace"); ns != teamA || name == "" {
		t.Fatalf("issued %s/%s, want a service account in %s", ns, name, teamA)
	}
	if !strings.HasPrefix(c.CredentialID, "JTI=") {
		t.Fatalf("credential_id %q, want JTI=...", c.CredentialID)
	}
	if code := podsStatus(t, testCtx(t, time.Minute), c.Token, teamA); code != http.StatusOK {
		t.Fatalf("listing pods in %s: HTTP %d, want 200", teamA, code)
	}
	done()

	done = step(t, "kube-apiserver audit: user system:serviceaccount:%s:%s with %s", teamA, name, c.CredentialID)
	wantUser := "system:serviceaccount:" + teamA + ":" + name
	used, issued, err := credentialAuditEvents(t, c.CredentialID)
	if used == nil {
		t.Fatalf("no kube-apiserver audit event with user.extra credential-id %q: %v", c.CredentialID, err)
	}
	if used.User.Username != wantUser {
		t.Errorf("audit event with %s: user %q, want %q", c.CredentialID, used.User.Username, wantUser)
	}
	t.Logf("kube audit: %s %s by %s, credential-id %s", used.Verb, used.RequestURI, used.User.Username, c.CredentialID)
	if issued == nil {
		t.Errorf("no kube-apiserver audit event with annotation issued-credential-id %q (the TokenRequest)", c.CredentialID)
	} else {
		if issued.User.Username != requesterUser {
			t.Errorf("the TokenRequest was made by %q, want %q", issued.User.Username, requesterUser)
		}
		if want := "/api/v1/namespaces/" + teamA + "/serviceaccounts/" + name + "/token"; !strings.HasPrefix(issued.RequestURI, want) {
			t.Errorf("the TokenRequest went to %q, want %s", issued.RequestURI, want)
		}
		t.Logf("kube audit: issued by %s: %s %s", issued.User.Username, issued.Verb, issued.RequestURI)
	}
	done()
}

// Bad input on the real stack: conflicting modes, malformed rules, selector
// and name templates are refused at role write; a namespace outside the
// allow-list (or none when two are allowed) is a 400 and creates nothing.
func TestEphemeralBadInput(t *testing.T) {
	ensureEphemeralSetup(t)

	done := step(t, "role writes refused with 400")
	for _, c := range []struct {
		name   string
		fields map[string]any
		want   string
	}{
		{"service_account_name and kubernetes_role_name", map[string]any{
			"service_account_name": stack.ScannerSA, "service_account_namespace": stack.ScannerNamespace,
			"kubernetes_role_name": podReader, "allowed_kubernetes_namespaces": teamA,
		}, "set exactly one of service_account_name, kubernetes_role_name, generated_role_rules and target_profiles/target_rules"},
		{"kubernetes_role_name and generated_role_rules", map[string]any{
			"kubernetes_role_name": podReader, "generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": teamA,
		}, "set exactly one of"},
		{"malformed rules", map[string]any{
			"generated_role_rules": "rules:\n- apiGroups: [\"\"]\n  resource: [pods]\n  verbs: [get]\n", "allowed_kubernetes_namespaces": teamA,
		}, "generated_role_rules"},
		{"malformed selector", map[string]any{
			"kubernetes_role_name": podReader, "allowed_kubernetes_namespace_selector": "team in (a",
		}, "allowed_kubernetes_namespace_selector"},
		{"no namespaces", map[string]any{"kubernetes_role_name": podReader}, "allowed_kubernetes_namespaces"},
		{"name_template rendering an invalid name", map[string]any{
			"kubernetes_role_name": podReader, "allowed_kubernetes_namespaces": teamA, "name_template": "Scan_{{ random 8 }}",
		}, "name_template renders"},
		{"name_template without randomness", map[string]any{
			"kubernetes_role_name": podReader, "allowed_kubernetes_namespaces": teamA, "name_template": "scan-{{ dns 20 .RoleName }}",
		}, "does not hold an uncut {{ random 8 }}"},
	} {
		role := "eph-bad"
		data := map[string]any{"cluster": stack.ClusterName}
		for k, v := range c.fields {
			data[k] = v
		}
		_, err := vaultClient(t).Logical().WriteWithContext(testCtx(t, time.Minute), stack.Mount+"/roles/"+role, data)
		e := asVaultError(t, "write role with "+c.name, err)
		if e.Status != http.StatusBadRequest || !strings.Contains(e.Text, c.want) {
			t.Errorf("%s: want HTTP 400 containing %q, got %d: %s", c.name, c.want, e.Status, e.Text)
		} else {
			t.Logf("%s: HTTP 400: %s", c.name, e.Text)
		}
		if sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/roles/"+role); err != nil || sec != nil {
			t.Errorf("%s: role %s exists after the refused write (%v)", c.name, role, err)
		}
	}
	done()

	role := "eph-allowlist"
	writeEphemeralRole(t, role, map[string]any{
		"kubernetes_role_name":          podReader,
		"allowed_kubernetes_namespaces": teamA + "," + teamB,
	})
	done = step(t, "creds outside the allow-list: 400, nothing created")
	for _, c := range []struct {
		ns, want string
	}{
		{stack.ScannerNamespace, `namespace "` + stack.ScannerNamespace + `" is not allowed by role "` + role + `"`},
		{"kube-system", `namespace "kube-system" is not allowed`},
		{"Team_A", "kubernetes_namespace"},
		{"", "needs kubernetes_namespace"},
	} {
		q := url.Values{}
		if c.ns != "" {
			q.Set("kubernetes_namespace", c.ns)
		}
		e := credsError(t, role, q)
		if e.Status != http.StatusBadRequest || !strings.Contains(e.Text, c.want) {
			t.Errorf("creds kubernetes_namespace=%q: want HTTP 400 containing %q, got %d: %s", c.ns, c.want, e.Status, e.Text)
		} else {
			t.Logf("kubernetes_namespace=%q: HTTP 400: %s", c.ns, e.Text)
		}
	}
	assertNoManaged(t, role, teamA, teamB, stack.ScannerNamespace, "kube-system")
	done()
}

// A role that would need the plugin to grant more than it holds (binding
// cluster-admin): creds fails with Kubernetes' RBAC escalation error and
// leaves nothing behind, and clusters/cluster-a/check lists the missing
// bind.
func TestEphemeralRBACEscalation(t *testing.T) {
	ensureEphemeralSetup(t)
	role := "eph-cluster-admin"
	writeEphemeralRole(t, role, map[string]any{
		"kubernetes_role_name":          "cluster-admin",
		"kubernetes_role_type":          "ClusterRole",
		"allowed_kubernetes_namespaces": teamA,
	})
	// A role within the plugin's rights, so check shows it is not missing.
	writeEphemeralRole(t, "eph-pod-reader-ok", map[string]any{
		"kubernetes_role_name":          podReader,
		"allowed_kubernetes_namespaces": teamA,
	})

	done := step(t, "creds for a RoleBinding to ClusterRole cluster-admin in %s: RBAC escalation refused, nothing left", teamA)
	e := credsError(t, role, nil)
	t.Logf("HTTP %d: %s", e.Status, e.Text)
	if e.Status != http.StatusBadGateway ||
		!(strings.Contains(e.Text, "attempting to grant RBAC permissions not currently held") || strings.Contains(strings.ToLower(e.Text), "forbidden")) {
		t.Errorf("want HTTP 502 with the RBAC escalation error, got %d: %s", e.Status, e.Text)
	}
	if !strings.Contains(e.Text, "rolebindings") {
		t.Errorf("the error does not say the RoleBinding was refused: %s", e.Text)
	}
	if o := managedObjects(t, teamA, ""); o.counts() != [3]int{} {
		t.Errorf("%s after the refused creds: want 0 managed ServiceAccounts, RoleBindings and Roles, have %s", teamA, o)
	}
	assertNoManaged(t, "", teamA, teamB)
	done()

	done = step(t, "clusters/%s/check lists bind clusterroles \"cluster-admin\" as missing", stack.ClusterName)
	sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+stack.ClusterName+"/check")
	if err != nil || sec == nil {
		t.Fatalf("read clusters/%s/check: %v", stack.ClusterName, err)
	}
	list := func(key string) []string {
		var out []string
		for _, v := range sec.Data[key].([]any) {
			out = append(out, str(v))
		}
		return out
	}
	missing, checked := list("missing_permissions"), list("checked_permissions")
	t.Logf("check: ok=%v missing_permissions=%q", sec.Data["ok"], missing)
	wantMissing := `bind clusterroles "cluster-admin" in namespace "` + teamA + `"`
	if ok, _ := sec.Data["ok"].(bool); ok || !slices.Contains(missing, wantMissing) {
		t.Errorf("check: ok=%v missing=%q; want ok=false and %q missing", sec.Data["ok"], missing, wantMissing)
	}
	podReaderBind := `bind roles "` + podReader + `" in namespace "` + teamA + `"`
	if !slices.Contains(checked, podReaderBind) || slices.Contains(missing, podReaderBind) {
		t.Errorf("check: want %q checked and not missing; checked=%q missing=%q", podReaderBind, checked, missing)
	}
	for _, m := range missing {
		if strings.Contains(m, `"`+teamA+`"`) && m != wantMissing {
			t.Errorf("check: %q missing in %s; deploy/ephemeral-modes.yaml should grant it", m, teamA)
		}
	}
	done()
}
