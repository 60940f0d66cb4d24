package acceptance

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

type checkResult struct {
	OK                 bool
	KubernetesVersion  string
	MissingPermissions []string
}

func clusterCheck(t *testing.T) checkResult {
	t.Helper()
	sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+stack.ClusterName+"/check")
	if err != nil {
		t.Fatalf("read clusters/%s/check: %v", stack.ClusterName, err)
	}
	if sec == nil {
		t.Fatalf("read clusters/%s/check: no data", stack.ClusterName)
	}
	var r checkResult
	var ok bool
	if r.OK, ok = sec.Data["ok"].(bool); !ok {
		t.Fatalf("check: ok is %#v, want a bool", sec.Data["ok"])
	}
	r.KubernetesVersion = str(sec.Data["kubernetes_version"])
	if mp, ok := sec.Data["missing_permissions"].([]any); ok {
		for _, m := range mp {
			r.MissingPermissions = append(r.MissingPermissions, str(m))
		}
	} else if sec.Data["missing_permissions"] != nil {
		t.Fatalf("check: missing_permissions is %#v, want a list", sec.Data["missing_permissions"])
	}
	return r
}

// setRequesterRules replaces the token requester Role's rules.
func setRequesterRules(t *testing.T, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	roles := cs.RbacV1().Roles(stack.ScannerNamespace)
	r, err := roles.Get(ctx, stack.RequesterRole, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Role %s: %v", stack.RequesterRole, err)
	}
	r.Rules = rules
	if _, err := roles.Update(ctx, r, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update Role %s: %v", stack.RequesterRole, err)
	}
}

// Test 7: with the token requester's Role reduced, creds fail with a
// "forbidden" error and leave no Secret, and clusters/<name>/check names the
// missing permission. The shipped Role is restored afterwards.
func TestReducedRBAC(t *testing.T) {
	done := step(t, "check with the shipped RBAC: ok")
	ctx := testCtx(t, time.Minute)
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	orig, err := cs.RbacV1().Roles(stack.ScannerNamespace).Get(ctx, stack.RequesterRole, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shipped := orig.Rules
	t.Cleanup(func() { setRequesterRules(t, shipped) })
	ver, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	c := clusterCheck(t)
	if !c.OK || len(c.MissingPermissions) != 0 {
		t.Fatalf("check with the shipped Role: ok=%v missing=%q, want ok and none missing", c.OK, c.MissingPermissions)
	}
	if c.KubernetesVersion != ver.GitVersion {
		t.Errorf("check kubernetes_version %q, the API server says %q", c.KubernetesVersion, ver.GitVersion)
	}
	done()

	tokenRule := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{stack.ScannerSA}, Verbs: []string{"create"}}
	secretRule := func(verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: verbs}
	}
	ns := `in namespace "` + stack.ScannerNamespace + `"`
	cases := []struct {
		name        string
		rules       []rbacv1.PolicyRule
		wantMissing []string // substrings of one missing_permissions entry
		issue       bool     // expect creds to fail with forbidden
	}{
		{"without create serviceaccounts/token", []rbacv1.PolicyRule{secretRule("create", "delete")},
			[]string{"create", "serviceaccounts/token", stack.ScannerSA, ns}, true},
		{"without create secrets", []rbacv1.PolicyRule{tokenRule, secretRule("delete")},
			[]string{"create", "secrets", ns}, true},
		{"without delete secrets", []rbacv1.PolicyRule{tokenRule, secretRule("create")},
			[]string{"delete", "secrets", ns}, false},
	}
	for _, tc := range cases {
		done := step(t, "Role %s", tc.name)
		setRequesterRules(t, tc.rules)
		var got checkResult
		// RBAC changes reach the authorizer through an informer: poll.
		_, err := stack.Poll(testCtx(t, time.Minute), 15*time.Second, 500*time.Millisecond, func() (bool, error) {
			got = clusterCheck(t)
			return !got.OK, nil
		})
		if err != nil {
			t.Fatalf("check still ok=true %s: missing=%q", tc.name, got.MissingPermissions)
		}
		if len(got.MissingPermissions) != 1 || !containsAll(got.MissingPermissions[0], tc.wantMissing) {
			t.Errorf("check missing_permissions %q, want exactly one entry naming %q", got.MissingPermissions, tc.wantMissing)
		} else {
			t.Logf("check: ok=false, missing_permissions=%q", got.MissingPermissions)
		}
		if tc.issue {
			before := secretCount(t, stack.RoleName)
			_, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/creds/"+stack.RoleName)
			var re *vaultapi.ResponseError
			// 502: the API server refuses the plugin's RBAC; the message
			// names the permission and points to check.
			if !errors.As(err, &re) || re.StatusCode != http.StatusBadGateway || !strings.Contains(strings.Join(re.Errors, " "), "clusters/"+stack.ClusterName+"/check") {
				t.Fatalf("creds %s: want HTTP 502 pointing to clusters/%s/check, got %v", tc.name, stack.ClusterName, err)
			}
			t.Logf("creds: HTTP %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
			for _, e := range re.Errors {
				if strings.Contains(e, st.TokenRequesterJWT) {
					t.Errorf("the error contains the token requester JWT")
				}
			}
			if n := secretCount(t, stack.RoleName); n != before || n != 0 {
				t.Errorf("bound Secrets after the failed creds: %d (before %d), want 0", n, before)
			}
		}
		done()
	}

	done = step(t, "restore the shipped Role: check ok and creds work again")
	setRequesterRules(t, shipped)
	_, err = stack.Poll(testCtx(t, time.Minute), 15*time.Second, 500*time.Millisecond, func() (bool, error) {
		c = clusterCheck(t)
		return c.OK, nil
	})
	if err != nil || len(c.MissingPermissions) != 0 {
		t.Fatalf("check after restoring: ok=%v missing=%q", c.OK, c.MissingPermissions)
	}
	cr := readCreds(t, stack.RoleName, nil)
	if code := tokenStatus(t, cr.Token); code != http.StatusOK {
		t.Fatalf("token after restoring RBAC: HTTP %d, want 200", code)
	}
	done()
}

func containsAll(s string, subs []string) bool {
	return !slices.ContainsFunc(subs, func(sub string) bool { return !strings.Contains(s, sub) })
}
