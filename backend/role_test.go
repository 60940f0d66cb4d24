package backend

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestReservedKey(t *testing.T) {
	tests := []struct {
		key      string
		reserved string // "" if the key is allowed
	}{
		{"team", ""},
		{"example.com/team", ""},
		{"example.com/kubernetes.io", ""},
		{"mykubernetes.io/x", ""},
		{"k8s.io.example.com/x", ""},
		{"kubernetes.io", ""}, // a name, no prefix
		{"app.kubernetes.io/managed-by", "the plugin"},
		{"vault-plugin-scanner/role", "the plugin"},
		{"vault-plugin-scanner/anything", "the plugin"},
		{"Vault-Plugin-Scanner/Role", "the plugin"},
		{"kubernetes.io/metadata.name", "Kubernetes"},
		{"k8s.io/x", "Kubernetes"},
		{"app.kubernetes.io/name", "Kubernetes"},
		{"node-role.kubernetes.io/control-plane", "Kubernetes"},
		{"rbac.authorization.k8s.io/aggregate-to-admin", "Kubernetes"},
		{"kubectl.kubernetes.io/last-applied-configuration", "Kubernetes"},
		{"a.b.c.k8s.io/x", "Kubernetes"},
		{"Kubernetes.IO/x", "Kubernetes"},
		{"RBAC.Authorization.K8S.io/aggregate-to-admin", "Kubernetes"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			got := reservedKey(tc.key)
			if (got == "") != (tc.reserved == "") || !strings.Contains(got, tc.reserved) {
				t.Fatalf("reservedKey(%q) = %q, want %q", tc.key, got, tc.reserved)
			}
		})
	}
}

func kvs(n int, prefix string, value func(i int) string) map[string]interface{} {
	m := map[string]interface{}{}
	for i := range n {
		m[fmt.Sprintf("%s%03d", prefix, i)] = value(i)
	}
	return m
}

func TestRoleExtraLabelsAndAnnotations(t *testing.T) {
	v := func(int) string { return "v" }
	huge := strings.Repeat("X", 300<<10)
	tests := []struct {
		name   string
		fields map[string]interface{}
		want   string // "" if accepted
	}{
		{"plain keys", map[string]interface{}{"extra_labels": []string{"team=a", "example.com/env=prod"}, "extra_annotations": []string{"owner=sec@example.com", "example.com/note=x y"}}, ""},
		{"a look-alike prefix", map[string]interface{}{"extra_labels": "mykubernetes.io/x=a", "extra_annotations": "k8s.io.example.com/x=a"}, ""},
		{"64 labels", map[string]interface{}{"extra_labels": kvs(64, "l", v)}, ""},
		{"64 annotations", map[string]interface{}{"extra_annotations": kvs(64, "a", v)}, ""},
		{"64 KiB of annotations", map[string]interface{}{"extra_annotations": map[string]interface{}{"note": strings.Repeat("x", 64<<10-4)}}, ""},
		{"upper-case annotation prefix", map[string]interface{}{"extra_annotations": "Example.COM/note=x"}, ""},

		{"kubernetes.io label", map[string]interface{}{"extra_labels": "kubernetes.io/metadata.name=x"}, `extra_labels key "kubernetes.io/metadata.name" is reserved for Kubernetes`},
		{"k8s.io label", map[string]interface{}{"extra_labels": "k8s.io/x=y"}, "reserved for Kubernetes"},
		{"app.kubernetes.io label", map[string]interface{}{"extra_labels": "app.kubernetes.io/name=x"}, "reserved for Kubernetes"},
		{"aggregation label", map[string]interface{}{"extra_labels": "rbac.authorization.k8s.io/aggregate-to-admin=true"}, `"rbac.authorization.k8s.io/aggregate-to-admin" is reserved for Kubernetes`},
		{"node-role label", map[string]interface{}{"extra_labels": "node-role.kubernetes.io/control-plane=x"}, "reserved for Kubernetes"},
		{"plugin's label prefix", map[string]interface{}{"extra_labels": "vault-plugin-scanner/role=x"}, "reserved for the plugin"},
		{"kubernetes.io annotation", map[string]interface{}{"extra_annotations": "kubernetes.io/service-account.name=x"}, `extra_annotations key "kubernetes.io/service-account.name" is reserved for Kubernetes`},
		{"kubectl annotation", map[string]interface{}{"extra_annotations": "kubectl.kubernetes.io/last-applied-configuration={}"}, "reserved for Kubernetes"},
		{"rbac annotation", map[string]interface{}{"extra_annotations": "rbac.authorization.kubernetes.io/autoupdate=false"}, "reserved for Kubernetes"},
		{"k8s.io annotation in upper case", map[string]interface{}{"extra_annotations": "RBAC.Authorization.K8S.io/x=y"}, "reserved for Kubernetes"},
		{"plugin's annotation in upper case", map[string]interface{}{"extra_annotations": "Vault-Plugin-Scanner/role=other"}, "reserved for the plugin"},

		{"65 labels", map[string]interface{}{"extra_labels": kvs(65, "l", v)}, "extra_labels has 65 entries; at most 64"},
		{"65 annotations", map[string]interface{}{"extra_annotations": kvs(65, "a", v)}, "extra_annotations has 65 entries; at most 64"},
		{"annotations above 64 KiB", map[string]interface{}{"extra_annotations": map[string]interface{}{"note": strings.Repeat("x", 64<<10-3)}}, "extra_annotations hold 65537 bytes"},
		{"annotation above Kubernetes' 256 KiB", map[string]interface{}{"extra_annotations": map[string]interface{}{"note": huge}}, "at most 65536"},
		{"label key too long", map[string]interface{}{"extra_labels": map[string]interface{}{strings.Repeat("k", 64): "v"}}, "no more than 63 bytes"},
		{"label prefix too long", map[string]interface{}{"extra_labels": map[string]interface{}{strings.Repeat("p", 254) + "/k": "v"}}, "no more than 253 bytes"},
		{"huge label key", map[string]interface{}{"extra_labels": map[string]interface{}{huge: "v"}}, `extra_labels key "XXXX`},
		{"huge annotation key", map[string]interface{}{"extra_annotations": map[string]interface{}{strings.Repeat("X", 60<<10): "v"}}, `extra_annotations key "XXXX`},
		{"huge label value", map[string]interface{}{"extra_labels": map[string]interface{}{"team": huge}}, `extra_labels value for "team" is invalid: must be no more than 63 bytes`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			data := withFields(validRoleBody(), tc.fields)
			if tc.want == "" {
				mustOK(t, b, s, logical.CreateOperation, "roles/role-new", data)
				return
			}
			state := recordState(t, b, s, fk, "roles/"+testRole)
			resp, err := request(t, b, s, logical.CreateOperation, "roles/role-new", data)
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("want a 400, got %#v, %v", resp, err)
			}
			msg := resp.Error().Error()
			if !containsFold(msg, tc.want) {
				t.Fatalf("error %q does not mention %q", msg[:min(len(msg), 300)], tc.want)
			}
			if strings.Contains(msg, strings.Repeat("X", clipBytes+1)) || len(msg) > 1024 {
				t.Fatalf("error is %d bytes long", len(msg))
			}
			state.check(t)
		})
	}
}

// The caps leave room for the plugin's own metadata: an object built from
// the largest role the plugin accepts passes Kubernetes' own validation.
func TestExtraMetadataHeadroom(t *testing.T) {
	name128 := strings.Repeat("n", maxVaultNameLength)
	role := &roleEntry{Cluster: name128, ServiceAccountNamespace: testNamespace, ExtraLabels: map[string]string{}, ExtraAnnotations: map[string]string{}}
	for i := range maxExtraEntries {
		role.ExtraLabels[fmt.Sprintf("%s/%s", strings.Repeat("p", 240), strings.Repeat(string(rune('a'+i%26)), 60)+fmt.Sprintf("%03d", i))] = strings.Repeat("v", 63)
	}
	perValue := maxExtraAnnotationsBytes/maxExtraEntries - 4
	for i := range maxExtraEntries {
		role.ExtraAnnotations[fmt.Sprintf("a%03d", i)] = strings.Repeat("x", perValue)
	}
	if err := validateExtraLabels(role.ExtraLabels); err != nil {
		t.Fatal(err)
	}
	if err := validateExtraAnnotations(role.ExtraAnnotations); err != nil {
		t.Fatal(err)
	}
	meta := objectMeta("vault-scanner-0123456789abcdef", testNamespace, leaseMeta{
		roleName: name128, role: role, expiresAt: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		issueID: strings.Repeat("i", 32), // longer than the plugin's own
	})
	path := field.NewPath("metadata")
	if errs := apivalidation.ValidateAnnotations(meta.Annotations, path.Child("annotations")); len(errs) > 0 {
		t.Fatalf("annotations: %v", details(errs))
	}
	if errs := metavalidation.ValidateLabels(meta.Labels, path.Child("labels")); len(errs) > 0 {
		t.Fatalf("labels: %v", details(errs))
	}
	if maxExtraAnnotationsBytes+4<<10 > apivalidation.TotalAnnotationSizeLimitB {
		t.Fatal("the extra annotations' cap leaves less than 4 KiB for the plugin's own")
	}
}
