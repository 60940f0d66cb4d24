package backend

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// targetBackend has cluster-a; namespaces team-a (team=a), team-b (team=b)
// and team-c; pods team-a/pod-a (app=web; containers app and sidecar),
// team-a/pod-b (app=web), team-a/pod-c (app=db), team-b/pod-d (app=web)
// and team-c/pod-e (app=web); and role "scan" written with fields.
func targetBackend(t *testing.T, fields map[string]interface{}) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	return targetBackendLogging(t, nil, fields)
}

// targetBackendLogging is targetBackend with the given logger (nil: the
// SDK's test logger).
func targetBackendLogging(t *testing.T, logger hclog.Logger, fields map[string]interface{}) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	b, s, fk := newTestBackendLogging(t, logger)
	for name, lbls := range map[string]map[string]string{"team-a": {"team": "a"}, "team-b": {"team": "b"}, "team-c": nil} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
		if _, err := fk.clientset.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web, db := map[string]string{"app": "web"}, map[string]string{"app": "db"}
	fk.addPod(t, "team-a", "pod-a", web, "app", "sidecar")
	fk.addPod(t, "team-a", "pod-b", web)
	fk.addPod(t, "team-a", "pod-c", db)
	fk.addPod(t, "team-b", "pod-d", web)
	fk.addPod(t, "team-c", "pod-e", web)
	configureCluster(t, b, s)
	data := map[string]interface{}{"cluster": testCluster}
	for k, v := range fields {
		data[k] = v
	}
	mustOK(t, b, s, logical.CreateOperation, "roles/scan", data)
	return b, s, fk
}

// podReads counts the get and list calls on pods the fake received, by
// namespace.
func podReads(fk *fakeKube) map[string]int {
	reads := map[string]int{}
	for _, a := range fk.clientset.Actions() {
		if a.GetResource().Resource == "pods" && (a.GetVerb() == "get" || a.GetVerb() == "list") {
			reads[a.GetNamespace()]++
		}
	}
	return reads
}

// assertNothingCreated fails unless no lease object and no TokenRequest
// exist.
func assertNothingCreated(t *testing.T, fk *fakeKube) {
	t.Helper()
	if left := leaseKubeObjects(t, fk); len(left) != 0 || len(fk.tokenRequests()) != 0 {
		t.Errorf("a refused request created %v and %d TokenRequests", left, len(fk.tokenRequests()))
	}
}

func rule(resource string, verbs ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{resource}, Verbs: verbs}
}

// The per-lease Role holds the profiles' and the operator's rules, each
// naming exactly the target pods.
func TestTargetProfiles(t *testing.T) {
	execRules := []rbacv1.PolicyRule{rule("pods", "get"), rule("pods/exec", "create"), rule("pods/log", "get")}
	debugRules := []rbacv1.PolicyRule{rule("pods", "get", "list", "watch"), rule("pods/ephemeralcontainers", "update", "patch"), rule("pods/attach", "create"), rule("pods/log", "get")}
	cases := []struct {
		name string
		role map[string]interface{}
		want []rbacv1.PolicyRule
	}{
		{"exec", map[string]interface{}{"target_profiles": "exec"}, execRules},
		{"debug", map[string]interface{}{"target_profiles": "debug"}, debugRules},
		{"exec and debug, duplicates dropped", map[string]interface{}{"target_profiles": "exec,debug"}, append(slices.Clone(execRules), debugRules[:3]...)},
		{"operator rules only", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["pods/portforward"],"verbs":["create"]}]`}, []rbacv1.PolicyRule{rule("pods/portforward", "create")}},
		{"profile and operator rules (YAML)", map[string]interface{}{"target_profiles": "exec", "target_rules": "rules:\n- apiGroups: ['']\n  resources: [pods, pods/status]\n  verbs: [get]\n"},
			append(slices.Clone(execRules), rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods", "pods/status"}, Verbs: []string{"get"}})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.role["allowed_kubernetes_namespaces"] = "team-a"
			b, s, fk := targetBackend(t, tc.role)
			resp := mustOK(t, b, s, logical.ReadOperation, "creds/scan", map[string]interface{}{"targets": "pod-b,pod-a"})
			name := resp.Data["service_account_name"].(string)
			role, err := fk.clientset.RbacV1().Roles("team-a").Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := targetRulesFor(tc.want, []string{"pod-a", "pod-b"})
			if !reflect.DeepEqual(role.Rules, want) {
				t.Errorf("rules:\n got %+v\nwant %+v", role.Rules, want)
			}
			for _, r := range role.Rules {
				if pluginOnlyRight(r) != "" {
					t.Errorf("a profile grants a right of the plugin's own: %+v", r)
				}
			}
			read := mustOK(t, b, s, logical.ReadOperation, "roles/scan", nil)
			if read.Data["max_targets"] != defaultMaxTargets || read.Data["kubernetes_role_type"] != kindRole {
				t.Errorf("role read: max_targets=%v kubernetes_role_type=%v", read.Data["max_targets"], read.Data["kubernetes_role_type"])
			}
		})
	}
}

func TestTargetRoleBadInput(t *testing.T) {
	many := make([]string, 12)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("v%d", i))
	}
	// 12 verbs x 2 resources x 50 names: 1,200 permissions.
	wide := fmt.Sprintf(`[{"apiGroups":[""],"resources":["pods","pods/log"],"verbs":[%s]}]`, strings.Join(many, ","))
	cases := []struct {
		name   string
		fields map[string]interface{}
		want   string
	}{
		{"unknown profile", map[string]interface{}{"target_profiles": "exec,shell"}, `unknown profile "shell"`},
		{"profile twice", map[string]interface{}{"target_profiles": "exec,exec"}, "twice"},
		{"resourceNames in target_rules", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"],"resourceNames":["db-0"]}]`}, "sets resourceNames"},
		{"secrets in target_rules", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}]`}, "pods and their subresources"},
		{"every resource", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["*"],"verbs":["get"]}]`}, "pods and their subresources"},
		{"every subresource of pods", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["pods/*"],"verbs":["create"]}]`}, "pods and their subresources"},
		{"any subresource", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["*/exec"],"verbs":["create"]}]`}, "pods and their subresources"},
		{"another group", map[string]interface{}{"target_rules": `[{"apiGroups":["apps"],"resources":["pods"],"verbs":["get"]}]`}, `apiGroups [""]`},
		{"every group", map[string]interface{}{"target_rules": `[{"apiGroups":["*"],"resources":["pods"],"verbs":["get"]}]`}, `apiGroups [""]`},
		{"nonResourceURLs", map[string]interface{}{"target_rules": `[{"nonResourceURLs":["/metrics"],"verbs":["get"]}]`}, "nonResourceURLs"},
		{"no verbs", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resources":["pods"]}]`}, "no verbs"},
		{"typo", map[string]interface{}{"target_rules": `[{"apiGroups":[""],"resource":["pods"],"verbs":["get"]}]`}, "YAML or JSON"},
		{"empty rules", map[string]interface{}{"target_rules": `rules: []`}, "no rule"},
		{"beyond the permission bound", map[string]interface{}{"target_rules": wide, "max_targets": 50}, "more than 1024 permissions"},
		{"max_targets zero", map[string]interface{}{"target_profiles": "exec", "max_targets": 0}, "between 1 and 50"},
		{"max_targets above 50", map[string]interface{}{"target_profiles": "exec", "max_targets": 51}, "between 1 and 50"},
		{"max_targets without targets", map[string]interface{}{"generated_role_rules": podReaderRules, "max_targets": 5}, "max_targets applies only"},
		{"with generated_role_rules", map[string]interface{}{"target_profiles": "exec", "generated_role_rules": podReaderRules}, "set exactly one"},
		{"with kubernetes_role_name", map[string]interface{}{"target_profiles": "exec", "kubernetes_role_name": "view"}, "set exactly one"},
		{"with service_account_name", map[string]interface{}{"target_profiles": "exec", "service_account_name": "sa"}, "set exactly one"},
		{"ClusterRole", map[string]interface{}{"target_profiles": "exec", "kubernetes_role_type": "ClusterRole"}, "kubernetes_role_type=Role"},
		{"no namespaces allowed", map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": nil}, "allowed_kubernetes_namespaces"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureCluster(t, b, s)
			data := map[string]interface{}{"cluster": testCluster, "allowed_kubernetes_namespaces": "team-a"}
			for k, v := range tc.fields {
				if v == nil {
					delete(data, k)
					continue
				}
				data[k] = v
			}
			mustBadRequest(t, b, s, logical.CreateOperation, "roles/scan", data, tc.want)
			if role, _ := getRole(context.Background(), s, "scan"); role != nil {
				t.Error("a refused role was stored")
			}
		})
	}
	t.Run("switching to another mode drops max_targets", func(t *testing.T) {
		b, s, _ := newTestBackend(t)
		configureCluster(t, b, s)
		mustOK(t, b, s, logical.CreateOperation, "roles/scan", map[string]interface{}{"cluster": testCluster, "allowed_kubernetes_namespaces": "team-a", "target_profiles": "exec", "max_targets": 3})
		mustOK(t, b, s, logical.UpdateOperation, "roles/scan", map[string]interface{}{"target_profiles": "", "generated_role_rules": podReaderRules})
		if role, _ := getRole(context.Background(), s, "scan"); role == nil || role.MaxTargets != 0 || role.mode() != modeGeneratedRole {
			t.Errorf("role = %+v", role)
		}
	})
}

// A request's targets resolve to pods that exist in allowed namespaces;
// the lease binds a Role naming exactly them in each of their namespaces.
func TestTargetResolution(t *testing.T) {
	type target struct {
		ns, pod    string
		containers []string
	}
	app := []string{"app"}
	cases := []struct {
		name    string
		role    map[string]interface{}
		request map[string]interface{}
		want    []target
	}{
		{
			name:    "names in the role's only namespace",
			role:    map[string]interface{}{"allowed_kubernetes_namespaces": "team-a"},
			request: map[string]interface{}{"targets": "pod-b,pod-a"},
			want:    []target{{"team-a", "pod-b", app}, {"team-a", "pod-a", []string{"app", "sidecar"}}},
		},
		{
			name:    "names in kubernetes_namespace",
			role:    map[string]interface{}{"allowed_kubernetes_namespaces": "team-a,team-b"},
			request: map[string]interface{}{"kubernetes_namespace": "team-b", "targets": "pod-d"},
			want:    []target{{"team-b", "pod-d", app}},
		},
		{
			name:    "namespace/pod across namespaces",
			role:    map[string]interface{}{"allowed_kubernetes_namespaces": "team-a,team-b"},
			request: map[string]interface{}{"targets": "team-b/pod-d,team-a/pod-c"},
			want:    []target{{"team-b", "pod-d", app}, {"team-a", "pod-c", app}},
		},
		{
			name:    "bare and qualified names",
			role:    map[string]interface{}{"allowed_kubernetes_namespaces": "team-a,team-b"},
			request: map[string]interface{}{"kubernetes_namespace": "team-a", "targets": "pod-c,team-b/pod-d"},
			want:    []target{{"team-a", "pod-c", app}, {"team-b", "pod-d", app}},
		},
		{
			name:    "selector",
			role:    map[string]interface{}{"allowed_kubernetes_namespaces": "team-a"},
			request: map[string]interface{}{"target_selector": "app=web"},
			want:    []target{{"team-a", "pod-a", []string{"app", "sidecar"}}, {"team-a", "pod-b", app}},
		},
		{
			name:    "selector over kubernetes_namespaces",
			role:    map[string]interface{}{"allowed_kubernetes_namespaces": "team-a,team-b"},
			request: map[string]interface{}{"kubernetes_namespaces": "team-b,team-a", "target_selector": "app in (web)"},
			want:    []target{{"team-b", "pod-d", app}, {"team-a", "pod-a", []string{"app", "sidecar"}}, {"team-a", "pod-b", app}},
		},
		{
			name:    "namespace allowed by the role's selector",
			role:    map[string]interface{}{"allowed_kubernetes_namespace_selector": "team=b"},
			request: map[string]interface{}{"targets": "team-b/pod-d"},
			want:    []target{{"team-b", "pod-d", app}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.role["target_profiles"] = "exec"
			b, s, fk := targetBackend(t, tc.role)
			resp := mustOK(t, b, s, logical.ReadOperation, "creds/scan", tc.request)

			var want []map[string]interface{}
			var namespaces []string
			for _, w := range tc.want {
				want = append(want, map[string]interface{}{"namespace": w.ns, "pod": w.pod, "containers": w.containers})
				if !slices.Contains(namespaces, w.ns) {
					namespaces = append(namespaces, w.ns)
				}
			}
			if got := resp.Data["targets"]; !reflect.DeepEqual(got, want) {
				t.Errorf("targets:\n got %v\nwant %v", got, want)
			}
			if !slices.Contains(resp.Warnings, targetsNotCoveredWarning) {
				t.Errorf("warnings %v lack that later pods are not covered", resp.Warnings)
			}
			first := namespaces[0]
			saName := resp.Data["service_account_name"].(string)
			if resp.Data["service_account_namespace"] != first || resp.Data["kubernetes_namespaces"] != strings.Join(namespaces, ",") {
				t.Errorf("issued %v/%v bound in %v", resp.Data["service_account_namespace"], saName, resp.Data["kubernetes_namespaces"])
			}
			cfg, err := clientcmd.Load([]byte(resp.Data["kubeconfig"].(string)))
			if err != nil || cfg.Contexts[cfg.CurrentContext].Namespace != first {
				t.Errorf("kubeconfig context namespace is not the first target's (%s): %v", first, err)
			}
			if got, want := leaseKubeObjects(t, fk), map[string]int{kindServiceAccount: 1, kindRole: len(namespaces), kindRoleBinding: len(namespaces)}; !equalCounts(got, want) {
				t.Errorf("objects = %v, want %v", got, want)
			}
			for _, ns := range namespaces {
				var pods []string
				for _, w := range tc.want {
					if w.ns == ns {
						pods = append(pods, w.pod)
					}
				}
				slices.Sort(pods)
				role, err := fk.clientset.RbacV1().Roles(ns).Get(context.Background(), saName, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("Role in %s: %v", ns, err)
				}
				for _, r := range role.Rules {
					if !slices.Equal(r.ResourceNames, pods) {
						t.Errorf("Role in %s names %v, want %v", ns, r.ResourceNames, pods)
					}
				}
				rb, err := fk.clientset.RbacV1().RoleBindings(ns).Get(context.Background(), saName, metav1.GetOptions{})
				subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: saName, Namespace: first}
				if err != nil || rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindRole, Name: saName}) || len(rb.Subjects) != 1 || rb.Subjects[0] != subject {
					t.Errorf("RoleBinding in %s = %+v, %v", ns, rb, err)
				}
			}
		})
	}
}

// Every refusal is a 400 before anything is created.
func TestTargetRefusals(t *testing.T) {
	roles := map[string]map[string]interface{}{
		"a":        {"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a", "max_targets": 2},
		"ab":       {"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a,team-b"},
		"selector": {"target_profiles": "exec", "allowed_kubernetes_namespace_selector": "team=a"},
	}
	cases := []struct {
		name, role string
		request    map[string]interface{}
		want       string
	}{
		{"no target", "a", nil, "name the pods to scan"},
		{"empty targets", "a", map[string]interface{}{"targets": ""}, "names no pod"},
		{"targets and selector", "a", map[string]interface{}{"targets": "pod-a", "target_selector": "app=web"}, "not both"},
		{"pod missing", "a", map[string]interface{}{"targets": "pod-a,pod-z"}, "team-a/pod-z does not exist"},
		{"namespace not allowed", "a", map[string]interface{}{"targets": "team-b/pod-d"}, `namespace "team-b" is not allowed`},
		{"more than max_targets", "a", map[string]interface{}{"targets": "pod-a,pod-b,pod-c"}, "at most 2"},
		{"selector matching more", "a", map[string]interface{}{"target_selector": "app"}, "matches more than 2 pods"},
		{"selector matching nothing", "a", map[string]interface{}{"target_selector": "app=cache"}, "matches no pod"},
		{"selector not parsing", "a", map[string]interface{}{"target_selector": "app in (web"}, "not a label selector"},
		{"selector selecting everything", "a", map[string]interface{}{"target_selector": " "}, "selects every pod"},
		{"selector in a namespace not allowed", "a", map[string]interface{}{"kubernetes_namespace": "team-b", "target_selector": "app=web"}, "not allowed"},
		{"duplicate", "ab", map[string]interface{}{"kubernetes_namespace": "team-a", "targets": "pod-a,team-a/pod-a"}, "more than once"},
		{"kubernetes_namespace unused", "ab", map[string]interface{}{"kubernetes_namespace": "team-b", "targets": "team-a/pod-a"}, "drop kubernetes_namespace"},
		{"bare name without a namespace", "ab", map[string]interface{}{"targets": "pod-a"}, "needs kubernetes_namespace"},
		{"targets with kubernetes_namespaces", "ab", map[string]interface{}{"kubernetes_namespaces": "team-a,team-b", "targets": "pod-a"}, "namespace/pod"},
		{"cluster_role_binding", "ab", map[string]interface{}{"kubernetes_namespace": "team-a", "targets": "pod-a", "cluster_role_binding": true}, "not allowed by this role"},
		{"namespace not matching the role's selector", "selector", map[string]interface{}{"targets": "team-b/pod-d"}, "labels do not match"},
		{"upper case", "a", map[string]interface{}{"targets": "Pod-A"}, "not a valid pod name"},
		{"path", "a", map[string]interface{}{"targets": "team-a/../pod-a"}, "not a pod name or namespace/pod"},
		{"two slashes", "a", map[string]interface{}{"targets": "team-a/pod-a/app"}, "not a pod name or namespace/pod"},
		{"empty name", "a", map[string]interface{}{"targets": "team-a/"}, "not a pod name"},
		{"empty namespace", "a", map[string]interface{}{"targets": "/pod-a"}, "namespace"},
		{"space", "a", map[string]interface{}{"targets": "pod a"}, "not a valid pod name"},
		{"unicode", "a", map[string]interface{}{"targets": "pod-ä"}, "not a valid pod name"},
		{"too long", "a", map[string]interface{}{"targets": strings.Repeat("a", 254)}, "not a valid pod name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := targetBackend(t, roles[tc.role])
			mustBadRequest(t, b, s, logical.ReadOperation, "creds/scan", tc.request, tc.want)
			assertNothingCreated(t, fk)
		})
	}
	t.Run("targets on a role not scoped to targets", func(t *testing.T) {
		b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"})
		mustBadRequest(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"targets": "pod-a"}, "not scoped to targets")
		mustBadRequest(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"target_selector": "app=web"}, "not scoped to targets")
		assertNothingCreated(t, fk)
	})
}

// Revoke deletes the ServiceAccount, every Role and binding; the pods stay.
func TestTargetRevoke(t *testing.T) {
	b, s, fk := targetBackend(t, map[string]interface{}{"target_profiles": "exec,debug", "allowed_kubernetes_namespaces": "team-a,team-b"})
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/scan", map[string]interface{}{"targets": "team-a/pod-a,team-b/pod-d"})
	if got := leaseKubeObjects(t, fk); !equalCounts(got, map[string]int{kindServiceAccount: 1, kindRole: 2, kindRoleBinding: 2}) {
		t.Fatalf("objects = %v", got)
	}
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if left := leaseKubeObjects(t, fk); len(left) != 0 {
		t.Errorf("objects left after revoke: %v", left)
	}
	for _, ref := range []string{"team-a/pod-a", "team-b/pod-d"} {
		ns, name, _ := strings.Cut(ref, "/")
		if _, err := fk.clientset.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			t.Errorf("pod %s: %v", ref, err)
		}
	}
}

// check asks for what a target role needs: reading pods in its namespaces,
// and the templates' rights (or escalate) to create the Roles.
func TestTargetCheckPermissions(t *testing.T) {
	b, s, fk := targetBackend(t, map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a"})
	fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
		return !(attrs.Resource == "pods" && attrs.Verb == "list") && attrs.Verb != "escalate" && attrs.Subresource != "exec"
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	missing := fmt.Sprint(resp.Data["missing_permissions"])
	for _, want := range []string{`list pods in namespace "team-a"`, `escalate roles in namespace "team-a"`} {
		if !strings.Contains(missing, want) {
			t.Errorf("missing_permissions %s lacks %s", missing, want)
		}
	}
	if checked := fmt.Sprint(resp.Data["checked_permissions"]); !strings.Contains(checked, `get pods in namespace "team-a"`) {
		t.Errorf("checked_permissions %s lacks get pods", checked)
	}
	fk.setAuthorizer(nil)
	// deploy/'s rights: every right but minting tokens for any account.
	resp = mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	if missing := fmt.Sprint(resp.Data["missing_permissions"]); strings.Contains(missing, "pods") || strings.Contains(missing, "escalate") {
		t.Errorf("check with deploy/'s rights: %s", missing)
	}
}

// kubeconfig/ passes targets and target_selector on to creds/ (each fetch
// resolves them again) after the same offline checks.
func TestTargetKubeconfig(t *testing.T) {
	b, s, _ := targetBackend(t, map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a,team-b"})
	cases := []struct {
		name     string
		request  map[string]interface{}
		wantArgs []string
		wantNS   string
	}{
		{"targets", map[string]interface{}{"targets": "team-b/pod-d,team-a/pod-a"}, []string{"targets=team-b/pod-d,team-a/pod-a"}, "team-b"},
		{"selector", map[string]interface{}{"kubernetes_namespace": "team-a", "target_selector": "app in (web, db)"}, []string{"kubernetes_namespace=team-a", "target_selector=app in (web, db)"}, "team-a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := &logical.Request{Operation: logical.ReadOperation, Path: "kubeconfig/scan", Storage: s, Data: tc.request, MountPoint: "scanner/"}
			resp, err := b.HandleRequest(context.Background(), req)
			if err != nil || resp.IsError() {
				t.Fatal(err, resp.Error())
			}
			cfg, err := clientcmd.Load([]byte(resp.Data["kubeconfig"].(string)))
			if err != nil {
				t.Fatal(err)
			}
			exec := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo].Exec
			if want := append([]string{"read", "-format=table", "-field=exec_credential", "scanner/creds/scan"}, tc.wantArgs...); !slices.Equal(exec.Args, want) {
				t.Errorf("args = %q, want %q", exec.Args, want)
			}
			if ns := cfg.Contexts[cfg.CurrentContext].Namespace; ns != tc.wantNS {
				t.Errorf("context namespace = %q, want %q", ns, tc.wantNS)
			}
			if !strings.Contains(strings.Join(resp.Warnings, "\n"), "resolves its targets again") {
				t.Errorf("warnings = %v", resp.Warnings)
			}
		})
	}
	for _, bad := range []map[string]interface{}{
		nil,
		{"targets": "team-c/pod-e"},
		{"targets": "Pod_A"},
		{"kubernetes_namespace": "team-a", "target_selector": "app in (web"},
	} {
		req := &logical.Request{Operation: logical.ReadOperation, Path: "kubeconfig/scan", Storage: s, Data: bad, MountPoint: "scanner/"}
		if resp, err := b.HandleRequest(context.Background(), req); err != nil || resp == nil || !resp.IsError() {
			t.Errorf("kubeconfig with %v: want a 400, got %v %v", bad, resp, err)
		}
	}
}

// The profiles stay within what they document and within the bounds at
// the largest max_targets.
func TestTargetProfilesBounded(t *testing.T) {
	for _, p := range profileNames() {
		role := &roleEntry{TargetProfiles: []string{p}, MaxTargets: maxMaxTargets, KubernetesRoleType: kindRole}
		rules, err := targetRuleTemplates(role)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		raw, _ := yaml.Marshal(rules)
		if _, err := parseTargetRules(string(raw)); err != nil {
			t.Errorf("profile %s would be refused as target_rules: %v", p, err)
		}
	}
}

// A selector is listed with a limit one above max_targets, so a selector
// matching thousands of pods costs one short page.
func TestTargetSelectorListIsBounded(t *testing.T) {
	b, s, fk := targetBackend(t, map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a", "max_targets": 1})
	var limits []int64
	fk.clientset.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		limits = append(limits, a.(k8stesting.ListActionImpl).ListOptions.Limit)
		return false, nil, nil
	})
	mustBadRequest(t, b, s, logical.ReadOperation, "creds/scan", map[string]interface{}{"target_selector": "app=web"}, "matches more than 1 pod")
	if !slices.Equal(limits, []int64{2}) {
		t.Errorf("list limits = %v, want [2]", limits)
	}
	assertNothingCreated(t, fk)
}
