package backend

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func validRoleBody() map[string]interface{} {
	return map[string]interface{}{
		"cluster":                   testCluster,
		"service_account_name":      testSA,
		"service_account_namespace": testNamespace,
	}
}

func TestRoleWriteBadInput(t *testing.T) {
	tests := []struct {
		name   string
		fields map[string]interface{} // over a valid body on create; alone on update. nil removes.
		want   string
		// createOnly: on an existing role a missing field keeps its stored value.
		createOnly bool
	}{
		{name: "unknown cluster", fields: map[string]interface{}{"cluster": "cluster-z"}, want: `cluster "cluster-z" is not configured; write clusters/cluster-z first`},
		{name: "invalid cluster name", fields: map[string]interface{}{"cluster": "a..b"}, want: "cluster name"},
		{name: "missing cluster", fields: map[string]interface{}{"cluster": nil}, want: "cluster is required", createOnly: true},
		{name: "empty cluster", fields: map[string]interface{}{"cluster": ""}, want: "cluster is required"},
		{name: "missing service account", fields: map[string]interface{}{"service_account_name": nil}, want: "set exactly one of service_account_name, kubernetes_role_name, generated_role_rules and target_profiles/target_rules", createOnly: true},
		{name: "empty service account", fields: map[string]interface{}{"service_account_name": "  "}, want: "set exactly one of service_account_name"},
		{name: "missing namespace", fields: map[string]interface{}{"service_account_namespace": nil}, want: "service_account_namespace is required", createOnly: true},
		{name: "empty namespace", fields: map[string]interface{}{"service_account_namespace": ""}, want: "service_account_namespace is required"},
		{name: "upper-case service account", fields: map[string]interface{}{"service_account_name": "Scanner"}, want: `service_account_name "Scanner" is not a valid Kubernetes service account name`},
		{name: "service account with underscore", fields: map[string]interface{}{"service_account_name": "scanner_sa"}, want: "not a valid Kubernetes service account name"},
		{name: "300-char service account", fields: map[string]interface{}{"service_account_name": strings.Repeat("s", 300)}, want: "not a valid Kubernetes service account name"},
		{name: "service account with slash", fields: map[string]interface{}{"service_account_name": "ns/sa"}, want: "service_account_name"},
		{name: "upper-case namespace", fields: map[string]interface{}{"service_account_namespace": "Scanner-NS"}, want: `service_account_namespace "Scanner-NS" is not a valid Kubernetes namespace name`},
		{name: "namespace with dots", fields: map[string]interface{}{"service_account_namespace": "team.scanner"}, want: "not a valid Kubernetes namespace name"},
		{name: "64-char namespace", fields: map[string]interface{}{"service_account_namespace": strings.Repeat("n", 64)}, want: "not a valid Kubernetes namespace name"},
		{name: "bad kubeconfig_namespace", fields: map[string]interface{}{"kubeconfig_namespace": "Bad_NS"}, want: `kubeconfig_namespace "Bad_NS" is not a valid Kubernetes namespace name`},
		{name: "ttl above max_ttl", fields: map[string]interface{}{"ttl": "2h", "max_ttl": "1h"}, want: "ttl 2h0m0s is greater than max_ttl 1h0m0s"},
		{name: "ttl above the default max_ttl", fields: map[string]interface{}{"ttl": "2h"}, want: "greater than max_ttl"},
		{name: "max_ttl below the default ttl", fields: map[string]interface{}{"max_ttl": "10m"}, want: "greater than max_ttl"},
		{name: "negative ttl", fields: map[string]interface{}{"ttl": "-5m"}, want: `field "ttl": cannot provide negative value`},
		{name: "negative ttl in seconds", fields: map[string]interface{}{"ttl": "-1"}, want: `field "ttl": cannot provide negative value`},
		{name: "negative ttl as a number", fields: map[string]interface{}{"ttl": -1}, want: `field "ttl": cannot provide negative value`},
		{name: "zero ttl", fields: map[string]interface{}{"ttl": "0"}, want: "ttl must be positive"},
		{name: "zero max_ttl", fields: map[string]interface{}{"max_ttl": "0s"}, want: "max_ttl must be positive"},
		{name: "negative max_ttl", fields: map[string]interface{}{"max_ttl": "-1h"}, want: `field "max_ttl": cannot provide negative value`},
		{name: "max_ttl above 2^32 seconds", fields: map[string]interface{}{"max_ttl": "2000000h"}, want: "max_ttl 2000000h0m0s is longer than a Kubernetes token can live"},
		{name: "max_ttl one second above 2^32", fields: map[string]interface{}{"max_ttl": "4294967297"}, want: "longer than a Kubernetes token can live"},
		{name: "max_ttl of 2^32 seconds leaves no room for the margin", fields: map[string]interface{}{"max_ttl": "4294967296"}, want: "at most 4294967266 s"},
		{name: "max_ttl one second above the margin", fields: map[string]interface{}{"max_ttl": "4294967267"}, want: "longer than a Kubernetes token can live"},
		{name: "ttl and max_ttl above 2^32 seconds", fields: map[string]interface{}{"ttl": "100000d", "max_ttl": "100000d"}, want: "longer than a Kubernetes token can live"},
		{name: "overflowing max_ttl", fields: map[string]interface{}{"max_ttl": "10000000000000h"}, want: `field "max_ttl"`},
		{name: "garbage ttl", fields: map[string]interface{}{"ttl": "abc"}, want: `field "ttl"`},
		{name: "garbage max_ttl", fields: map[string]interface{}{"max_ttl": "1 hour"}, want: `field "max_ttl"`},
		{name: "duplicate audiences", fields: map[string]interface{}{"audiences": "vault,api,vault"}, want: `audience "vault" is listed twice`},
		{name: "duplicate audiences as a list", fields: map[string]interface{}{"audiences": []string{"api", "api"}}, want: "listed twice"},
		{name: "empty audience", fields: map[string]interface{}{"audiences": "vault,,api"}, want: "audiences must not contain an empty value"},
		{name: "blank audience", fields: map[string]interface{}{"audiences": []string{"vault", " "}}, want: "empty value"},
		{name: "17 audiences", fields: map[string]interface{}{"audiences": audienceList(17, 5)}, want: "audiences has 17 entries; at most 16"},
		{name: "audience of 257 bytes", fields: map[string]interface{}{"audiences": []string{strings.Repeat("a", 257)}}, want: "is 257 bytes long; at most 256"},
		{name: "reserved label", fields: map[string]interface{}{"extra_labels": map[string]interface{}{"app.kubernetes.io/managed-by": "me"}}, want: `extra_labels key "app.kubernetes.io/managed-by" is reserved`},
		{name: "reserved label as a pair", fields: map[string]interface{}{"extra_labels": []string{"app.kubernetes.io/managed-by=me"}}, want: "is reserved"},
		{name: "reserved annotation", fields: map[string]interface{}{"extra_annotations": map[string]interface{}{"vault-plugin-scanner/role": "other"}}, want: `extra_annotations key "vault-plugin-scanner/role" is reserved`},
		{name: "reserved annotation prefix", fields: map[string]interface{}{"extra_annotations": map[string]interface{}{"vault-plugin-scanner/expires-at": "never"}}, want: "is reserved"},
		{name: "Kubernetes label", fields: map[string]interface{}{"extra_labels": "rbac.authorization.k8s.io/aggregate-to-admin=true"}, want: "is reserved for Kubernetes"},
		{name: "Kubernetes annotation", fields: map[string]interface{}{"extra_annotations": "app.kubernetes.io/name=x"}, want: "is reserved for Kubernetes"},
		{name: "too many labels", fields: map[string]interface{}{"extra_labels": kvs(65, "l", func(int) string { return "v" })}, want: "at most 64"},
		{name: "annotations too large", fields: map[string]interface{}{"extra_annotations": map[string]interface{}{"note": strings.Repeat("x", 300<<10)}}, want: "at most 65536"},
		{name: "invalid label key", fields: map[string]interface{}{"extra_labels": map[string]interface{}{"bad key": "v"}}, want: `extra_labels key "bad key" is invalid`},
		{name: "invalid label key prefix", fields: map[string]interface{}{"extra_labels": map[string]interface{}{"Bad_Prefix/team": "v"}}, want: "extra_labels key"},
		{name: "invalid label value", fields: map[string]interface{}{"extra_labels": map[string]interface{}{"team": "has space"}}, want: `extra_labels value for "team" is invalid`},
		{name: "label value too long", fields: map[string]interface{}{"extra_labels": map[string]interface{}{"team": strings.Repeat("v", 64)}}, want: "extra_labels value"},
		{name: "invalid annotation key", fields: map[string]interface{}{"extra_annotations": map[string]interface{}{"-bad": "v"}}, want: `extra_annotations key "-bad" is invalid`},
		{name: "unknown field", fields: map[string]interface{}{"service_acount_name": testSA}, want: "unknown field(s) service_acount_name"},
		{name: "unknown field for ttl", fields: map[string]interface{}{"default_ttl": "5m"}, want: "unknown field(s) default_ttl"},
	}
	for _, tc := range tests {
		for _, mode := range []string{"create", "update"} {
			if mode == "update" && tc.createOnly {
				continue
			}
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				b, s, fk := newConfiguredBackend(t)
				op, path, data := logical.CreateOperation, "roles/role-new", withFields(validRoleBody(), tc.fields)
				if mode == "update" {
					op, path, data = logical.UpdateOperation, "roles/"+testRole, withFields(nil, tc.fields)
				}
				state := recordState(t, b, s, fk, "roles/"+testRole, "roles/role-new", "clusters/"+testCluster)
				mustBadRequest(t, b, s, op, path, data, tc.want)
				state.check(t)
			})
		}
	}
}

func TestRoleNames(t *testing.T) {
	for _, name := range []string{"a..b", strings.Repeat("r", 300), "röle", "-leading", "trailing.", "_under"} {
		t.Run(name[:min(len(name), 20)], func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			state := recordState(t, b, s, fk, "roles/"+testRole)
			mustBadRequest(t, b, s, logical.CreateOperation, "roles/"+name, validRoleBody(), "role name")
			mustBadRequest(t, b, s, logical.ReadOperation, "roles/"+name, nil, "role name")
			mustBadRequest(t, b, s, logical.DeleteOperation, "roles/"+name, nil, "role name")
			state.check(t)
		})
	}
	b, s, _ := newConfiguredBackend(t)
	mustOK(t, b, s, logical.CreateOperation, "roles/CI.Deploy_2", validRoleBody())
	if readResponseData(t, b, s, "roles/CI.Deploy_2") == nil {
		t.Fatal("role with upper case, dot and underscore not stored")
	}
}

func TestRoleDefaults(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	got := readResponseData(t, b, s, "roles/"+testRole)
	want := map[string]interface{}{
		"cluster":                   testCluster,
		"service_account_name":      testSA,
		"service_account_namespace": testNamespace,
		"ttl":                       int64(900),
		"max_ttl":                   int64(3600),
		"audiences":                 []string{},
		"kubeconfig_namespace":      testNamespace,
		"extra_labels":              map[string]string{},
		"extra_annotations":         map[string]string{},

		"kubernetes_role_name":                  "",
		"kubernetes_role_type":                  "",
		"generated_role_rules":                  "",
		"allowed_kubernetes_namespaces":         []string{},
		"allowed_kubernetes_namespace_selector": "",
		"allow_cluster_role_binding":            false,
		"name_template":                         "",
		"target_profiles":                       []string{},
		"target_rules":                          "",
		"max_targets":                           0,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read role:\n got %#v\nwant %#v", got, want)
	}
}

func TestRoleUpdateKeepsUnspecifiedFields(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureCluster(t, b, s)
	configureRole(t, b, s, map[string]interface{}{
		"ttl":                  "20m",
		"max_ttl":              "2h",
		"audiences":            "vault,api",
		"kubeconfig_namespace": "default",
		"extra_labels":         map[string]interface{}{"team": "scanner"},
		"extra_annotations":    map[string]interface{}{"owner": "sec@example.com"},
	})
	before := readResponseData(t, b, s, "roles/"+testRole)

	mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"ttl": "30m"})
	after := readResponseData(t, b, s, "roles/"+testRole)
	if after["ttl"] != int64(1800) {
		t.Fatalf("ttl = %v, want 1800", after["ttl"])
	}
	before["ttl"] = int64(1800)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("an update of ttl changed other fields:\nbefore %#v\nafter  %#v", before, after)
	}

	// A refused update keeps everything, including the ttl just written.
	mustBadRequest(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"ttl": "3h"}, "greater than max_ttl")
	if again := readResponseData(t, b, s, "roles/"+testRole); !reflect.DeepEqual(again, after) {
		t.Fatalf("refused update changed the role:\nbefore %#v\nafter  %#v", after, again)
	}
}

func TestRoleMaxTTLAboveMountMax(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	// The test mount's max lease TTL is 24h.
	resp := mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"max_ttl": "48h"})
	if resp == nil || len(resp.Warnings) == 0 {
		t.Fatalf("want a warning, got %#v", resp)
	}
	if w := strings.Join(resp.Warnings, "\n"); !strings.Contains(w, "max_ttl 48h0m0s is above the mount's max lease TTL 24h0m0s") {
		t.Fatalf("warning %q does not explain the cap", w)
	}
	if got := readResponseData(t, b, s, "roles/"+testRole)["max_ttl"]; got != int64(48*3600) {
		t.Fatalf("stored max_ttl = %v, want %d", got, 48*3600)
	}

	// At TokenRequest's limit (2^32 s) less the plugin's 30 s margin the
	// role is still accepted, with the warning.
	resp = mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"max_ttl": "4294967266"})
	if resp == nil || len(resp.Warnings) == 0 {
		t.Fatalf("want a warning, got %#v", resp)
	}

	// Within the mount max: no warning.
	resp = mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"max_ttl": "24h"})
	if resp != nil && len(resp.Warnings) != 0 {
		t.Fatalf("unexpected warnings %v", resp.Warnings)
	}
}

func TestRoleList(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureCluster(t, b, s)
	resp := mustOK(t, b, s, logical.ListOperation, "roles/", nil)
	if keys, _ := resp.Data["keys"].([]string); len(keys) != 0 {
		t.Fatalf("empty mount lists %v", keys)
	}
	for _, name := range []string{"deploy", "audit", "Scan"} {
		mustOK(t, b, s, logical.CreateOperation, "roles/"+name, validRoleBody())
	}
	mustOK(t, b, s, logical.DeleteOperation, "roles/audit", nil)
	for _, path := range []string{"roles/", "roles"} {
		resp := mustOK(t, b, s, logical.ListOperation, path, nil)
		got, _ := resp.Data["keys"].([]string)
		sort.Strings(got)
		if want := []string{"Scan", "deploy"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("list %s = %#v, want %#v", path, got, want)
		}
	}
}

// Errors quote at most a clipped piece of what was sent, however large.
func TestRoleWriteErrorsAreShort(t *testing.T) {
	huge := strings.Repeat("X", 100000)
	tests := []struct {
		name   string
		fields map[string]interface{}
		want   string
	}{
		{"service account name", map[string]interface{}{"service_account_name": huge}, "not a valid Kubernetes service account name"},
		{"namespace", map[string]interface{}{"service_account_namespace": huge}, "not a valid Kubernetes namespace name"},
		{"kubeconfig namespace", map[string]interface{}{"kubeconfig_namespace": huge}, "not a valid Kubernetes namespace name"},
		{"unknown field", map[string]interface{}{huge: "v"}, "unknown field(s)"},
		{"audience", map[string]interface{}{"audiences": []string{huge}}, "bytes long"},
		{"duplicate audience", map[string]interface{}{"audiences": []string{huge[:256], huge[:256]}}, "listed twice"},
		{"label key", map[string]interface{}{"extra_labels": map[string]interface{}{huge: "v"}}, "extra_labels key"},
		{"label value", map[string]interface{}{"extra_labels": map[string]interface{}{"team": huge}}, "extra_labels value"},
		{"annotation key", map[string]interface{}{"extra_annotations": map[string]interface{}{huge[:60000]: "v"}}, "extra_annotations key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			resp, err := request(t, b, s, logical.CreateOperation, "roles/role-new", withFields(validRoleBody(), tc.fields))
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("want a 400, got %#v, %v", resp, err)
			}
			msg := resp.Error().Error()
			if !containsFold(msg, tc.want) {
				t.Fatalf("error %q does not mention %q", msg, tc.want)
			}
			if strings.Contains(msg, strings.Repeat("X", clipBytes+1)) {
				t.Fatalf("error quotes more than %d bytes of the input: %d bytes long", clipBytes, len(msg))
			}
		})
	}
}

// The longest lease a role allows still fits TokenRequest's 2^32 s once the
// plugin adds its margin.
func TestMaxRoleMaxTTLFitsTokenRequest(t *testing.T) {
	if got := tokenExpirationSeconds(maxRoleMaxTTL); got > 1<<32 {
		t.Fatalf("a lease of max_ttl %s asks for a %d s token; TokenRequest allows %d", maxRoleMaxTTL, got, int64(1)<<32)
	}
	if got := tokenExpirationSeconds(maxRoleMaxTTL + time.Second); got <= 1<<32 {
		t.Fatalf("the bound is not tight: one second more asks for %d s", got)
	}
}

// audienceList is n distinct audiences of size bytes each.
func audienceList(n, size int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%0*d", size, i)
	}
	return out
}

func TestRoleAudiencesAtTheLimits(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	auds := audienceList(maxAudiences, maxAudienceBytes)
	mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"audiences": auds})
	if got := readResponseData(t, b, s, "roles/"+testRole)["audiences"]; !reflect.DeepEqual(got, auds) {
		t.Fatalf("audiences read back as %v", got)
	}
}

// Rules and selectors are parsed on every issue: their size is bounded at
// write, and parser errors quote little of the input.
func TestRoleRulesAndSelectorBounded(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	huge := "- verbs: [get]\n  apiGroups: ['']\n  resources: [pods]\n" + strings.Repeat("# padding\n", 7000)
	base := map[string]interface{}{"cluster": testCluster, "allowed_kubernetes_namespaces": "team-a"}
	for name, data := range map[string]map[string]interface{}{
		"rules too large":    withFields(base, map[string]interface{}{"generated_role_rules": huge}),
		"selector too large": withFields(base, map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespace_selector": strings.Repeat("a", 5000) + "=b"}),
	} {
		t.Run(name, func(t *testing.T) {
			mustBadRequest(t, b, s, logical.CreateOperation, "roles/big", data, "at most")
		})
	}
	resp, err := request(t, b, s, logical.CreateOperation, "roles/big", withFields(base, map[string]interface{}{"generated_role_rules": "[" + strings.Repeat("x", 10000)}))
	if err != nil || resp == nil || !resp.IsError() || len(resp.Error().Error()) > 512 {
		t.Fatalf("bad rules: %v %v; want a short 400", resp, err)
	}
}
