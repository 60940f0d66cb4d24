package backend

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
)

func TestClusterCheck(t *testing.T) {
	cases := []struct {
		name        string
		denied      string // "verb resource/subresource" the fake authorizer refuses
		wantOK      bool
		wantMissing string
	}{
		{name: "all rights", wantOK: true},
		{name: "no delete on secrets", denied: "delete secrets/", wantMissing: `delete secrets in namespace "scanner-namespace"`},
		{name: "no token requests", denied: "create serviceaccounts/token", wantMissing: `create serviceaccounts/token "scanner-sa" in namespace "scanner-namespace"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			var asked []string
			fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
				key := attrs.Verb + " " + attrs.Resource + "/" + attrs.Subresource
				asked = append(asked, key)
				return key != tc.denied && deployRights(attrs)
			})
			resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
			if resp.Data["ok"] != tc.wantOK {
				t.Errorf("ok = %v, want %v", resp.Data["ok"], tc.wantOK)
			}
			missing := resp.Data["missing_permissions"].([]string)
			if tc.wantMissing == "" && len(missing) != 0 || tc.wantMissing != "" && (len(missing) != 1 || missing[0] != tc.wantMissing) {
				t.Errorf("missing = %q, want %q", missing, tc.wantMissing)
			}
			// Three rights, and whether the plugin may mint tokens for any
			// service account in the role's namespace.
			if len(asked) != 4 {
				t.Errorf("asked %d access reviews (%s), want 4", len(asked), strings.Join(asked, ", "))
			}
			if _, ok := resp.Data["kubernetes_version"].(string); !ok {
				t.Errorf("no kubernetes_version in %v", resp.Data)
			}
			if n := len(fk.managedSecrets(t)); n != 0 {
				t.Errorf("check created %d Secrets", n)
			}
		})
	}
}

func TestClusterCheckUnknownCluster(t *testing.T) {
	b, s, _ := newTestBackend(t)
	mustBadRequest(t, b, s, logical.ReadOperation, "clusters/nope/check", nil, "not configured")
}

func TestClusterReadRedactsProxyPassword(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"proxy_url": "http://scanner:hunter2@proxy.internal:3128", "service_account_jwt": testRequesterJWT})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster, nil)
	if got := resp.Data["proxy_url"]; got != "http://scanner:xxxxx@proxy.internal:3128" {
		t.Errorf("proxy_url read back as %v", got)
	}
	cfg, _ := getCluster(t.Context(), s, testCluster)
	if cfg.ProxyURL != "http://scanner:hunter2@proxy.internal:3128" {
		t.Errorf("stored proxy_url lost its password: %s", cfg.ProxyURL)
	}
}

// Two generated-rule roles in one namespace share the name of the right to
// create their Roles (escalate roles), not its alternative (holding every
// right the rules grant): check asks for each role's rules.
func TestClusterCheckGeneratedRulesPerRole(t *testing.T) {
	b, s, fk := newTestBackend(t)
	configureCluster(t, b, s)
	for name, resource := range map[string]string{"gen-a": "pods", "gen-b": "configmaps"} {
		mustOK(t, b, s, logical.CreateOperation, "roles/"+name, map[string]interface{}{
			"cluster": testCluster, "allowed_kubernetes_namespaces": testNamespace,
			"generated_role_rules": `[{"apiGroups":[""],"resources":["` + resource + `"],"verbs":["get"]}]`,
		})
	}
	// The plugin holds gen-a's rule, not gen-b's, and may not escalate.
	fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
		return attrs.Verb != "escalate" && attrs.Resource != "configmaps"
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	want := `escalate roles in namespace "` + testNamespace + `"`
	if missing := resp.Data["missing_permissions"].([]string); !slices.Equal(missing, []string{want}) || resp.Data["ok"] != false {
		t.Errorf("missing_permissions %q (ok=%v), want exactly %q", missing, resp.Data["ok"], want)
	}
}

// check reports whom the API server takes the plugin for.
func TestClusterCheckIdentity(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	if resp.Data["identity"] != testRequesterUser {
		t.Errorf("identity = %v, want what SelfSubjectReview answers (%s)", resp.Data["identity"], testRequesterUser)
	}
	if resp.Data["self_rotation_permitted"] != false {
		t.Error("self-rotation reported possible in issuer mode")
	}
}
