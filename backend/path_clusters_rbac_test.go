package backend

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

const podRules = `[{"apiGroups":[""],"resources":["pods"],"verbs":["get","list"]}]`

// rbacBackend is a backend whose cluster-a holds a token for the plugin's
// own service account, with team-a and team-b (labelled team=a, team=b)
// and the given roles written.
func rbacBackend(t *testing.T, roles map[string]map[string]interface{}) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	b, s, fk := newTestBackend(t)
	for name, lbls := range map[string]map[string]string{"team-a": {"team": "a"}, "team-b": {"team": "b"}} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
		if _, err := fk.clientset.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host":     testHost,
		"kubernetes_ca_cert":  testCAPEM(t),
		"service_account_jwt": bootstrapJWT("rbac-test", time.Hour),
	})
	for _, name := range sortedKeys(roles) {
		data := map[string]interface{}{"cluster": testCluster}
		for k, v := range roles[name] {
			data[k] = v
		}
		mustOK(t, b, s, logical.CreateOperation, "roles/"+name, data)
	}
	return b, s, fk
}

var existingAccount = map[string]interface{}{"service_account_name": testSA, "service_account_namespace": testNamespace}

// rbacRule is one rule of the output, where it applies ("" for a
// ClusterRole bound cluster-wide) and the roles its comment names.
type rbacRule struct {
	doc     string
	ns      string
	rule    rbacv1.PolicyRule
	comment []string
}

// parseRBAC parses the manifests back into rbac objects and checks that
// every Role and ClusterRole is bound to subject under its own name.
func parseRBAC(t *testing.T, manifests string, subject rbacv1.Subject) []rbacRule {
	t.Helper()
	if !strings.HasPrefix(manifests, "# ") {
		t.Errorf("manifests do not start with their comment line:\n%s", manifests)
	}
	var rules []rbacRule
	roles := map[string]bool{}
	bound := map[string]bool{}
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document does not parse: %v\n%s", err, doc)
		}
		if tm.APIVersion != "rbac.authorization.k8s.io/v1" {
			t.Errorf("apiVersion %q", tm.APIVersion)
		}
		var policy []rbacv1.PolicyRule
		var key, ns string
		var binding *struct {
			ref      rbacv1.RoleRef
			subjects []rbacv1.Subject
		}
		switch tm.Kind {
		case kindRole:
			var r rbacv1.Role
			mustUnmarshalStrict(t, doc, &r)
			policy, ns, key = r.Rules, r.Namespace, "Role/"+r.Namespace+"/"+r.Name
			if ns == "" {
				t.Errorf("Role %s has no namespace", r.Name)
			}
		case kindClusterRole:
			var r rbacv1.ClusterRole
			mustUnmarshalStrict(t, doc, &r)
			policy, key = r.Rules, "ClusterRole//"+r.Name
		case kindRoleBinding:
			var rb rbacv1.RoleBinding
			mustUnmarshalStrict(t, doc, &rb)
			key = rb.RoleRef.Kind + "/" + rb.Namespace + "/" + rb.RoleRef.Name
			if rb.Name != rb.RoleRef.Name {
				t.Errorf("RoleBinding %s binds %s", rb.Name, rb.RoleRef.Name)
			}
			binding = &struct {
				ref      rbacv1.RoleRef
				subjects []rbacv1.Subject
			}{rb.RoleRef, rb.Subjects}
		case kindClusterRoleBinding:
			var crb rbacv1.ClusterRoleBinding
			mustUnmarshalStrict(t, doc, &crb)
			key = crb.RoleRef.Kind + "//" + crb.RoleRef.Name
			binding = &struct {
				ref      rbacv1.RoleRef
				subjects []rbacv1.Subject
			}{crb.RoleRef, crb.Subjects}
		default:
			t.Fatalf("unexpected kind %q", tm.Kind)
		}
		if binding != nil {
			if len(binding.subjects) != 1 || binding.subjects[0] != subject {
				t.Errorf("%s binds %v, want %v", key, binding.subjects, subject)
			}
			bound[key] = true
			continue
		}
		roles[key] = true
		comments := ruleComments(t, doc)
		if len(comments) != len(policy) {
			t.Fatalf("%s: %d comments for %d rules:\n%s", key, len(comments), len(policy), doc)
		}
		for i, rule := range policy {
			rules = append(rules, rbacRule{doc: key, ns: ns, rule: rule, comment: comments[i]})
		}
	}
	for key := range roles {
		if !bound[key] {
			t.Errorf("%s is not bound", key)
		}
	}
	for key := range bound {
		if !roles[key] {
			t.Errorf("a binding refers to %s, which the manifests do not hold", key)
		}
	}
	return rules
}

func mustUnmarshalStrict(t *testing.T, doc string, into interface{}) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatalf("document does not parse strictly: %v\n%s", err, doc)
	}
}

// ruleComments reads the comment lines after "rules:", in order: the role
// names of "# roles: a, b", or [""] for self-rotation.
func ruleComments(t *testing.T, doc string) [][]string {
	t.Helper()
	_, rules, ok := strings.Cut(doc, "\nrules:\n")
	if !ok {
		t.Fatalf("no rules in\n%s", doc)
	}
	var out [][]string
	for _, line := range strings.Split(rules, "\n") {
		switch {
		case strings.HasPrefix(line, "# roles: "):
			names := strings.Split(strings.TrimPrefix(line, "# roles: "), ", ")
			for i, n := range names {
				if n == selfRotation {
					names[i] = ""
				}
			}
			slices.Sort(names)
			out = append(out, names)
		case strings.HasPrefix(line, "# self-rotation"):
			out = append(out, []string{""})
		case strings.HasPrefix(line, "#"):
			t.Errorf("unexpected comment %q", line)
		}
	}
	return out
}

// ruleAllows evaluates one rule, applying in ns ("" everywhere), as RBAC
// does for a resource request.
func ruleAllows(r rbacRule, a authorizationv1.ResourceAttributes) bool {
	if r.ns != "" && r.ns != a.Namespace {
		return false
	}
	has := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	resource := a.Resource
	if a.Subresource != "" {
		resource += "/" + a.Subresource
	}
	return has(r.rule.Verbs, a.Verb) && has(r.rule.APIGroups, a.Group) &&
		slices.ContainsFunc(r.rule.Resources, func(res string) bool { return resourceCovers(res, resource) }) &&
		(len(r.rule.ResourceNames) == 0 || a.Name != "" && slices.Contains(r.rule.ResourceNames, a.Name))
}

func rulesAllow(rules []rbacRule, a authorizationv1.ResourceAttributes) bool {
	return slices.ContainsFunc(rules, func(r rbacRule) bool { return ruleAllows(r, a) })
}

// permissionGranted is whether rules satisfy p: its right, or every
// permission of its alternative.
func permissionGranted(rules []rbacRule, p requiredPermission) bool {
	if rulesAllow(rules, p.attrs) {
		return true
	}
	if len(p.orAll) == 0 {
		return false
	}
	for _, a := range p.orAll {
		if !rulesAllow(rules, a) {
			return false
		}
	}
	return true
}

// ownedPermission is a required permission and the role that needs it
// ("" for self-rotation).
type ownedPermission struct {
	role string
	perm requiredPermission
}

// wantedPermissions are what permissionsFor and selfRotationPermissions
// list for the covered roles (selected: what each selector matches).
func wantedPermissions(t *testing.T, s logical.Storage, covered []string, selected map[string][]string) []ownedPermission {
	t.Helper()
	var out []ownedPermission
	for _, name := range covered {
		role, err := getRole(context.Background(), s, name)
		if err != nil || role == nil {
			t.Fatalf("role %s: %v", name, err)
		}
		perms := permissionsFor(role, selected[name])
		for _, p := range append(perms, cleanupPermissionsFor(role, perms)...) {
			out = append(out, ownedPermission{name, p})
		}
	}
	cfg, err := getCluster(context.Background(), s, testCluster)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UseIssuer {
		return out // no stored credential, no self-rotation
	}
	perms, why := selfRotationPermissions(cfg)
	if why != "" {
		t.Fatalf("self-rotation: %s", why)
	}
	for _, p := range perms {
		out = append(out, ownedPermission{"", p})
	}
	return out
}

// ruleRights expands a rule into single rights, where it applies.
func ruleRights(r rbacRule) []authorizationv1.ResourceAttributes {
	names := r.rule.ResourceNames
	if len(names) == 0 {
		names = []string{""}
	}
	var out []authorizationv1.ResourceAttributes
	for _, verb := range r.rule.Verbs {
		for _, group := range r.rule.APIGroups {
			for _, res := range r.rule.Resources {
				resource, sub, _ := strings.Cut(res, "/")
				for _, name := range names {
					out = append(out, authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Subresource: sub, Name: name, Namespace: r.ns})
				}
			}
		}
	}
	return out
}

// verifyRBAC checks the rules against the permissions: every one granted,
// each rule needed, nothing granted that no permission names, and each
// comment naming exactly the roles whose permissions the rule grants.
func verifyRBAC(t *testing.T, rules []rbacRule, wanted []ownedPermission) {
	t.Helper()
	for _, w := range wanted {
		if !permissionGranted(rules, w.perm) {
			t.Errorf("%s (role %q) is not granted", w.perm, w.role)
		}
	}
	for i, r := range rules {
		rest := slices.Delete(slices.Clone(rules), i, i+1)
		if !slices.ContainsFunc(wanted, func(w ownedPermission) bool { return !permissionGranted(rest, w.perm) }) {
			t.Errorf("%s rule %v is not needed: every permission is granted without it", r.doc, r.rule)
		}
		if slices.Contains(r.rule.Verbs, "escalate") {
			t.Errorf("%s rule %v grants escalate", r.doc, r.rule)
		}
		for _, right := range ruleRights(r) {
			named := slices.ContainsFunc(wanted, func(w ownedPermission) bool {
				return w.perm.attrs == right || slices.Contains(w.perm.orAll, right)
			})
			if !named {
				t.Errorf("%s rule %v grants %+v, which no role needs", r.doc, r.rule, right)
			}
		}
		who := map[string]bool{}
		for _, w := range wanted {
			attrs := []authorizationv1.ResourceAttributes{w.perm.attrs}
			if len(w.perm.orAll) > 0 {
				attrs = w.perm.orAll
			}
			for _, a := range attrs {
				if ruleAllows(r, a) {
					who[w.role] = true
				}
			}
		}
		if got, want := r.comment, sortedKeys(who); !slices.Equal(got, want) {
			t.Errorf("%s rule %v: comment names %q, want %q", r.doc, r.rule, got, want)
		}
	}
}

var pluginSubject = rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: pluginSA, Namespace: pluginNamespace}

func TestClusterRBAC(t *testing.T) {
	cases := []struct {
		name     string
		roles    map[string]map[string]interface{}
		selected map[string][]string
		// namespaced: the namespaces whose Role the output holds, besides
		// the plugin's own (self-rotation).
		namespaced  []string
		clusterRole bool
		wantNote    string
	}{
		{name: "existing account", roles: map[string]map[string]interface{}{"scan": existingAccount}, namespaced: []string{testNamespace}},
		{
			name:       "kubernetes_role_name Role",
			roles:      map[string]map[string]interface{}{"reader": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"}},
			namespaced: []string{"team-a"},
		},
		{
			name:        "kubernetes_role_name ClusterRole",
			roles:       map[string]map[string]interface{}{"viewer": {"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "team-a", "allow_cluster_role_binding": true}},
			namespaced:  []string{"team-a"},
			clusterRole: true,
		},
		{
			name:       "generated Role",
			roles:      map[string]map[string]interface{}{"gen": {"generated_role_rules": podRules, "allowed_kubernetes_namespaces": "team-a"}},
			namespaced: []string{"team-a"},
		},
		{
			name:       "target-scoped (exec profile)",
			roles:      map[string]map[string]interface{}{"scan": {"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a"}},
			namespaced: []string{"team-a"},
		},
		{
			name:        "generated ClusterRole",
			roles:       map[string]map[string]interface{}{"gen": {"generated_role_rules": podRules, "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "team-a,team-b"}},
			namespaced:  []string{"team-a", "team-b"},
			clusterRole: true,
		},
		{
			name: "multi-namespace",
			roles: map[string]map[string]interface{}{
				"scan":   existingAccount,
				"reader": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a,team-b"},
				"gen":    {"generated_role_rules": podRules, "allowed_kubernetes_namespaces": "team-b"},
			},
			namespaced: []string{testNamespace, "team-a", "team-b"},
		},
		{
			name: "cluster-wide beside namespaced",
			roles: map[string]map[string]interface{}{
				"reader": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"},
				"any":    {"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "*"},
			},
			// team-a's bind on pod-reader is the one right the ClusterRole lacks.
			namespaced:  []string{"team-a"},
			clusterRole: true,
		},
		{
			name:        "selector",
			roles:       map[string]map[string]interface{}{"sel": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespace_selector": "team=a"}},
			selected:    map[string][]string{"sel": {"team-a"}},
			namespaced:  []string{"team-a"},
			clusterRole: true, // get namespaces
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := rbacBackend(t, tc.roles)
			resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
			covered := resp.Data["roles"].([]string)
			if want := sortedKeys(tc.roles); !slices.Equal(covered, want) {
				t.Errorf("roles = %q, want %q", covered, want)
			}
			if resp.Data["complete"] != true {
				t.Errorf("complete = %v; notes %q", resp.Data["complete"], resp.Data["notes"])
			}
			subject := resp.Data["subject"].(map[string]interface{})
			if subject["kind"] != "ServiceAccount" || subject["name"] != pluginSA || subject["namespace"] != pluginNamespace {
				t.Errorf("subject = %v", subject)
			}
			manifests := resp.Data["manifests"].(string)
			rules := parseRBAC(t, manifests, pluginSubject)
			verifyRBAC(t, rules, wantedPermissions(t, s, covered, tc.selected))

			docs := map[string]bool{}
			for _, r := range rules {
				docs[r.doc] = true
			}
			want := map[string]bool{"Role/" + pluginNamespace + "/" + pluginSA + "-self-rotation": true}
			for _, ns := range tc.namespaced {
				want["Role/"+ns+"/"+pluginSA+"-token-requester"] = true
			}
			if tc.clusterRole {
				want["ClusterRole//"+pluginSA+"-token-requester"] = true
			}
			if got := sortedKeys(docs); !slices.Equal(got, sortedKeys(want)) {
				t.Errorf("roles written: %q, want %q\n%s", got, sortedKeys(want), manifests)
			}
			if t.Failed() {
				t.Logf("manifests:\n%s", manifests)
			}
		})
	}
}

// The existing-account role's token right names its service account, and
// the bound Role is named: resourceNames survive the merge.
func TestClusterRBACResourceNames(t *testing.T) {
	b, s, _ := rbacBackend(t, map[string]map[string]interface{}{
		"scan":   existingAccount,
		"reader": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"},
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	manifests := resp.Data["manifests"].(string)
	var token, bind *rbacRule
	rules := parseRBAC(t, manifests, pluginSubject)
	for i, r := range rules {
		if slices.Contains(r.rule.Resources, "serviceaccounts/token") && r.ns == testNamespace {
			token = &rules[i]
		}
		if slices.Contains(r.rule.Verbs, "bind") {
			bind = &rules[i]
		}
	}
	if token == nil || !slices.Equal(token.rule.ResourceNames, []string{testSA}) || !slices.Equal(token.comment, []string{"scan"}) {
		t.Errorf("token rule %+v, want resourceNames [%s] and comment scan\n%s", token, testSA, manifests)
	}
	if bind == nil || !slices.Equal(bind.rule.ResourceNames, []string{"pod-reader"}) || !slices.Equal(bind.rule.Resources, []string{"roles"}) || bind.ns != "team-a" {
		t.Errorf("bind rule %+v, want bind roles pod-reader in team-a\n%s", bind, manifests)
	}
	if strings.Contains(manifests, "escalate") {
		t.Errorf("manifests grant escalate:\n%s", manifests)
	}
}

// A selector whose namespaces cannot be listed gets its rights cluster-wide,
// and a note says so.
func TestClusterRBACSelectorUnlisted(t *testing.T) {
	b, s, fk := rbacBackend(t, map[string]map[string]interface{}{"sel": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespace_selector": "team=a"}})
	fk.clientset.PrependReactor("list", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "", fmt.Errorf("no list"))
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	notes := strings.Join(resp.Data["notes"].([]string), "\n")
	if !strings.Contains(notes, "role sel: cannot list the namespaces its selector matches") || !strings.Contains(notes, "cluster-wide") {
		t.Errorf("notes = %q", notes)
	}
	rules := parseRBAC(t, resp.Data["manifests"].(string), pluginSubject)
	verifyRBAC(t, rules, wantedPermissions(t, s, []string{"sel"}, nil))
	for _, r := range rules {
		if r.ns != "" && r.ns != pluginNamespace {
			t.Errorf("rule in namespace %s; want every right of sel cluster-wide", r.ns)
		}
	}
}

// A role the plugin refuses gets no rules and a note; the others are
// covered.
func TestClusterRBACRefusedRole(t *testing.T) {
	b, s, fk := rbacBackend(t, map[string]map[string]interface{}{
		"scan":   existingAccount,
		"reader": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"},
	})
	// The plugin may mint tokens for any service account: existing-account
	// roles are refused.
	fk.setAuthorizer(func(authorizationv1.ResourceAttributes) bool { return true })
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	if got := resp.Data["roles"].([]string); !slices.Equal(got, []string{"reader"}) {
		t.Errorf("roles = %q, want [reader]", got)
	}
	notes := strings.Join(resp.Data["notes"].([]string), "\n")
	if !strings.Contains(notes, "role scan gets no rules") {
		t.Errorf("notes = %q", notes)
	}
	manifests := resp.Data["manifests"].(string)
	if strings.Contains(manifests, testNamespace) || strings.Contains(manifests, "roles: scan") {
		t.Errorf("the refused role got rules:\n%s", manifests)
	}
	verifyRBAC(t, parseRBAC(t, manifests, pluginSubject), wantedPermissions(t, s, []string{"reader"}, nil))
}

// An existing-account role beside an ephemeral one in its namespace: the
// ephemeral role's unnamed token right makes the plugin refuse the other,
// and a note says so.
func TestClusterRBACTokenConflict(t *testing.T) {
	b, s, _ := rbacBackend(t, map[string]map[string]interface{}{
		"scan":   existingAccount,
		"reader": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": testNamespace},
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	notes := strings.Join(resp.Data["notes"].([]string), "\n")
	if !strings.Contains(notes, "role scan: role(s) reader need create serviceaccounts/token for any service account") {
		t.Errorf("notes = %q", notes)
	}
	verifyRBAC(t, parseRBAC(t, resp.Data["manifests"].(string), pluginSubject), wantedPermissions(t, s, []string{"reader", "scan"}, nil))
}

// A role whose rights do not fit in maxRBACPermissions is left out whole;
// the others are covered and complete is false.
func TestClusterRBACBounds(t *testing.T) {
	resources := make([]string, 100)
	for i := range resources {
		resources[i] = fmt.Sprintf("widgets%03d", i)
	}
	// 10 verbs x 100 resources: 1000 rights per namespace, 3000 in all.
	rulesJSON, _ := yaml.YAMLToJSON([]byte(fmt.Sprintf("- apiGroups: [example.com]\n  resources: [%s]\n  verbs: [get, list, watch, create, update, patch, delete, deletecollection, use, approve]\n", strings.Join(resources, ", "))))
	b, s, _ := rbacBackend(t, map[string]map[string]interface{}{
		"big":  {"generated_role_rules": string(rulesJSON), "allowed_kubernetes_namespaces": "team-a,team-b,team-c"},
		"scan": existingAccount,
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	if got := resp.Data["roles"].([]string); !slices.Equal(got, []string{"scan"}) {
		t.Errorf("roles = %q, want [scan]", got)
	}
	if resp.Data["complete"] != false {
		t.Errorf("complete = %v, want false", resp.Data["complete"])
	}
	notes := strings.Join(resp.Data["notes"].([]string), "\n")
	if !strings.Contains(notes, fmt.Sprintf("role big is left out: the manifests hold at most %d rights", maxRBACPermissions)) {
		t.Errorf("notes = %q", notes)
	}
	manifests := resp.Data["manifests"].(string)
	if strings.Contains(manifests, "widgets") {
		t.Errorf("the left-out role got rules")
	}
	verifyRBAC(t, parseRBAC(t, manifests, pluginSubject), wantedPermissions(t, s, []string{"scan"}, nil))

	// Under the bound, it is covered.
	mustOK(t, b, s, logical.UpdateOperation, "roles/big", map[string]interface{}{"allowed_kubernetes_namespaces": "team-a"})
	resp = mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	if got := resp.Data["roles"].([]string); !slices.Equal(got, []string{"big", "scan"}) || resp.Data["complete"] != true {
		t.Errorf("roles = %q complete = %v, want both and complete", got, resp.Data["complete"])
	}
	verifyRBAC(t, parseRBAC(t, resp.Data["manifests"].(string), pluginSubject), wantedPermissions(t, s, []string{"big", "scan"}, nil))
}

func TestClusterRBACUnknownCluster(t *testing.T) {
	b, s, _ := newTestBackend(t)
	mustBadRequest(t, b, s, logical.ReadOperation, "clusters/nope/rbac", nil, "not configured")
	mustBadRequest(t, b, s, logical.ReadOperation, "clusters/bad..name/rbac", nil, "invalid")
}

// A credential whose claims name no service account: the subject is whom
// the API server says, self-rotation does not apply.
func TestClusterRBACUserSubject(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	subject := resp.Data["subject"].(map[string]interface{})
	if subject["kind"] != "User" || subject["name"] != testRequesterUser {
		t.Errorf("subject = %v", subject)
	}
	notes := strings.Join(resp.Data["notes"].([]string), "\n")
	if !strings.Contains(notes, "rotate-root cannot tell") {
		t.Errorf("notes = %q", notes)
	}
	rules := parseRBAC(t, resp.Data["manifests"].(string), rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: testRequesterUser})
	for _, r := range rules {
		if r.comment[0] == "" {
			t.Errorf("self-rotation rule without a service account: %v", r.rule)
		}
	}
	if strings.Contains(resp.Data["manifests"].(string), testRequesterJWT) {
		t.Error("the manifests carry the credential")
	}
}

// deploy/token-requester.yaml ships the output for the role the acceptance
// stack writes (cluster-a: scanner-sa in scanner-namespace), byte for byte.
func TestClusterRBACDeployTokenRequester(t *testing.T) {
	b, s, _ := rbacBackend(t, map[string]map[string]interface{}{testRole: existingAccount})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	shipped, err := os.ReadFile(filepath.Join("..", "deploy", "token-requester.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if manifests := resp.Data["manifests"].(string); !strings.HasSuffix(string(shipped), "---\n"+manifests) {
		t.Errorf("deploy/token-requester.yaml does not end with the output of clusters/%s/rbac:\n%s", testCluster, manifests)
	}
}

// deploy/target-scans.yaml is the read's output for its one documented
// role: exec-profile target scans in team-a and team-b.
func TestClusterRBACDeployTargetScans(t *testing.T) {
	b, s, _ := rbacBackend(t, map[string]map[string]interface{}{"scan-pods": {"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a,team-b"}})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	manifests := resp.Data["manifests"].(string)
	if path := os.Getenv("WRITE_DEPLOY_TARGET_SCANS"); path != "" {
		if err := os.WriteFile(path, []byte(manifests), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shipped, err := os.ReadFile(filepath.Join("..", "deploy", "target-scans.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(shipped), "---\n"+manifests) {
		t.Errorf("deploy/target-scans.yaml does not end with the output of clusters/%s/rbac:\n%s", testCluster, manifests)
	}
}

// deploy/ephemeral-modes.yaml ends with the read's output for its two
// documented roles: per-lease ServiceAccounts bound to pod-reader in team-a
// and team-b, and a generated pod reader in namespaces labelled team=a or
// team=b.
func TestClusterRBACDeployEphemeralModes(t *testing.T) {
	b, s, _ := rbacBackend(t, map[string]map[string]interface{}{
		"pod-reader":     {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a,team-b"},
		"pods-generated": {"generated_role_rules": podRules, "allowed_kubernetes_namespace_selector": "team in (a,b)"},
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	manifests := resp.Data["manifests"].(string)
	if path := os.Getenv("WRITE_DEPLOY_EPHEMERAL_MODES"); path != "" {
		if err := os.WriteFile(path, []byte(manifests), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shipped, err := os.ReadFile(filepath.Join("..", "deploy", "ephemeral-modes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(shipped), "---\n"+manifests) {
		t.Errorf("deploy/ephemeral-modes.yaml does not end with the output of clusters/%s/rbac:\n%s", testCluster, manifests)
	}
}

// In issuer mode the manifests bind the User the API server maps the
// plugin's tokens to, before the API server trusts the issuer, and grant
// no self-rotation.
func TestClusterRBACIssuerMode(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	mustOK(t, b, s, logical.CreateOperation, "roles/scan", withFields(map[string]interface{}{"cluster": testCluster}, existingAccount))

	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/rbac", nil)
	user := issuerUsername(testIssuer, "scanner:"+testCluster)
	subject := resp.Data["subject"].(map[string]interface{})
	if subject["kind"] != rbacv1.UserKind || subject["name"] != user {
		t.Errorf("subject = %v, want User %s", subject, user)
	}
	rules := parseRBAC(t, resp.Data["manifests"].(string), rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user})
	verifyRBAC(t, rules, wantedPermissions(t, s, []string{"scan"}, nil))
	for _, r := range rules {
		if slices.Contains(r.comment, "") || strings.Contains(r.doc, "self-rotation") {
			t.Errorf("issuer mode grants self-rotation: %v", r)
		}
	}
	if notes := strings.Join(resp.Data["notes"].([]string), "\n"); !strings.Contains(notes, "issuer mode") {
		t.Errorf("notes do not say why self-rotation is left out: %q", notes)
	}
}
