package acceptance

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The RBAC the plugin generates for cluster-a (clusters/cluster-a/rbac) is
// exactly what the stack runs with (deploy/token-requester.yaml), and every
// one of its rules is needed: without any one, check names what is missing.
// Sequential: it changes the token requester's Role, as TestReducedRBAC does.
func TestGeneratedRBACIsExactlyEnough(t *testing.T) {
	done := step(t, "vault read %s/clusters/%s/rbac: its Roles for %s and %s equal the live ones", stack.Mount, stack.ClusterName, stack.ScannerNamespace, stack.RequesterNamespace)
	sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+stack.ClusterName+"/rbac")
	if err != nil || sec == nil {
		t.Fatalf("read clusters/%s/rbac: %v", stack.ClusterName, err)
	}
	manifests, _ := sec.Data["manifests"].(string)
	generated := map[string]*rbacv1.Role{} // by namespace/name
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var head metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("a generated document does not parse: %v", err)
		}
		if head.Kind != "Role" {
			continue
		}
		var role rbacv1.Role
		if err := yaml.UnmarshalStrict([]byte(doc), &role); err != nil {
			t.Fatalf("a generated Role does not parse: %v", err)
		}
		generated[role.Namespace+"/"+role.Name] = &role
	}
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, time.Minute)
	var requester *rbacv1.Role
	for _, ns := range []string{stack.ScannerNamespace, stack.RequesterNamespace} {
		found := false
		for key, role := range generated {
			if !strings.HasPrefix(key, ns+"/") {
				continue
			}
			found = true
			live, err := cs.RbacV1().Roles(ns).Get(ctx, role.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("generated Role %s is not what the stack runs with: %v", key, err)
			}
			if got, want := ruleSet(live.Rules), ruleSet(role.Rules); !slices.Equal(got, want) {
				t.Errorf("Role %s: live rules %q, generated %q", key, got, want)
			}
			if key == stack.ScannerNamespace+"/"+stack.RequesterRole {
				requester = role
			}
		}
		if !found {
			t.Errorf("no generated Role in namespace %s", ns)
		}
	}
	if requester == nil {
		t.Fatalf("no generated Role %s/%s", stack.ScannerNamespace, stack.RequesterRole)
	}
	done()

	shipped := requester.Rules
	t.Cleanup(func() { setRequesterRules(t, shipped) })
	for i := range shipped {
		rule := strings.Join(ruleSet(shipped[i:i+1]), "")
		done := step(t, "requester Role without %s: check names what is missing", rule)
		setRequesterRules(t, slices.Delete(slices.Clone(shipped), i, i+1))
		var got checkResult
		// RBAC changes reach the authorizer through an informer: poll.
		if _, err := stack.Poll(testCtx(t, time.Minute), 15*time.Second, 500*time.Millisecond, func() (bool, error) {
			got = clusterCheck(t)
			return !got.OK, nil
		}); err != nil || len(got.MissingPermissions) == 0 {
			t.Errorf("without %s: check ok=%v, missing=%q; want a missing permission", rule, got.OK, got.MissingPermissions)
		} else {
			t.Logf("without %s: missing_permissions=%q", rule, got.MissingPermissions)
		}
		setRequesterRules(t, shipped)
		if _, err := stack.Poll(testCtx(t, time.Minute), 15*time.Second, 500*time.Millisecond, func() (bool, error) {
			return clusterCheck(t).OK, nil
		}); err != nil {
			t.Fatalf("check not ok again after restoring the Role: %v", err)
		}
		done()
	}
}

// ruleSet is rules as sorted, comparable strings, one per verb, resource
// and name they grant.
func ruleSet(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{"*"}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						out = append(out, v+" "+g+"/"+res+" "+n+";")
					}
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
