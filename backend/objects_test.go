package backend

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"slices"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
)

// testLeaseMeta is the metadata of a lease of testRole issued now.
func testLeaseMeta(issueID string) leaseMeta {
	return leaseMeta{
		roleName: testRole, issueID: issueID, expiresAt: time.Now(),
		role: &roleEntry{Cluster: testCluster, ServiceAccountName: testSA, ServiceAccountNamespace: testNamespace},
	}
}

func names(secrets []corev1.Secret) []string {
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		out = append(out, s.Name)
	}
	return out
}

const podReaderRules = `rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
`

// ephemeralBackend has cluster-a, namespaces team-a (team=a) and team-b, and
// role "eph" written with fields.
func ephemeralBackend(t *testing.T, fields map[string]interface{}) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	b, s, fk := newTestBackend(t)
	for name, lbls := range map[string]map[string]string{"team-a": {"team": "a"}, "team-b": {"team": "b"}} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
		if _, err := fk.clientset.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	configureCluster(t, b, s)
	data := map[string]interface{}{"cluster": testCluster}
	for k, v := range fields {
		data[k] = v
	}
	mustOK(t, b, s, logical.CreateOperation, "roles/eph", data)
	return b, s, fk
}

// leaseKubeObjects counts the plugin's objects of every kind it creates.
func leaseKubeObjects(t *testing.T, fk *fakeKube) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, kind := range kindsInDeleteOrder {
		objs, err := fk.listManaged(kind, "")
		if err != nil {
			t.Fatalf("listing %s: %v", kind, err)
		}
		if len(objs) > 0 {
			counts[kind] = len(objs)
		}
	}
	return counts
}

func TestEphemeralModes(t *testing.T) {
	cases := []struct {
		name     string
		role     map[string]interface{}
		request  map[string]interface{}
		want     map[string]int
		roleRef  rbacv1.RoleRef // Name "" means the generated name
		wantNS   string
		clusterB bool
	}{
		{
			name:    "existing Role",
			role:    map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"},
			want:    map[string]int{kindServiceAccount: 1, kindRoleBinding: 1},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindRole, Name: "pod-reader"},
			wantNS:  "team-a",
		},
		{
			name:    "existing ClusterRole in a requested namespace",
			role:    map[string]interface{}{"kubernetes_role_name": "view", "kubernetes_role_type": "clusterrole", "allowed_kubernetes_namespaces": "team-a,team-b"},
			request: map[string]interface{}{"kubernetes_namespace": "team-b"},
			want:    map[string]int{kindServiceAccount: 1, kindRoleBinding: 1},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindClusterRole, Name: "view"},
			wantNS:  "team-b",
		},
		{
			name:     "existing ClusterRole bound cluster-wide",
			role:     map[string]interface{}{"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "*", "allow_cluster_role_binding": true},
			request:  map[string]interface{}{"kubernetes_namespace": "team-a", "cluster_role_binding": true},
			want:     map[string]int{kindServiceAccount: 1, kindClusterRoleBinding: 1},
			roleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindClusterRole, Name: "view"},
			wantNS:   "team-a",
			clusterB: true,
		},
		{
			name:    "generated Role",
			role:    map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespace_selector": "team=a"},
			request: map[string]interface{}{"kubernetes_namespace": "team-a"},
			want:    map[string]int{kindServiceAccount: 1, kindRole: 1, kindRoleBinding: 1},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindRole},
			wantNS:  "team-a",
		},
		{
			name:    "generated ClusterRole from JSON",
			role:    map[string]interface{}{"generated_role_rules": `[{"apiGroups":[""],"resources":["pods"],"verbs":["list"]},{"nonResourceURLs":["/healthz"],"verbs":["get"]}]`, "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "team-a"},
			want:    map[string]int{kindServiceAccount: 1, kindClusterRole: 1, kindRoleBinding: 1},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindClusterRole},
			wantNS:  "team-a",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := ephemeralBackend(t, tc.role)
			resp := mustOK(t, b, s, logical.ReadOperation, "creds/eph", tc.request)
			if got := leaseKubeObjects(t, fk); !equalCounts(got, tc.want) {
				t.Fatalf("objects = %v, want %v", got, tc.want)
			}
			saName := resp.Data["service_account_name"].(string)
			if resp.Data["service_account_namespace"] != tc.wantNS || !strings.HasPrefix(saName, "vault-eph-") {
				t.Errorf("issued %v/%v", resp.Data["service_account_namespace"], saName)
			}
			sa, err := fk.clientset.CoreV1().ServiceAccounts(tc.wantNS).Get(context.Background(), saName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("per-lease ServiceAccount: %v", err)
			}
			if sa.Annotations[roleAnnotation] != "eph" || sa.Labels[managedByLabel] != managedByValue {
				t.Errorf("ServiceAccount metadata = %v %v", sa.Labels, sa.Annotations)
			}

			wantRef := tc.roleRef
			if wantRef.Name == "" {
				wantRef.Name = saName
			}
			subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: saName, Namespace: tc.wantNS}
			if tc.clusterB {
				crb, err := fk.clientset.RbacV1().ClusterRoleBindings().Get(context.Background(), saName, metav1.GetOptions{})
				if err != nil || crb.RoleRef != wantRef || len(crb.Subjects) != 1 || crb.Subjects[0] != subject {
					t.Fatalf("ClusterRoleBinding = %+v, %v", crb, err)
				}
			} else {
				rb, err := fk.clientset.RbacV1().RoleBindings(tc.wantNS).Get(context.Background(), saName, metav1.GetOptions{})
				if err != nil || rb.RoleRef != wantRef || len(rb.Subjects) != 1 || rb.Subjects[0] != subject {
					t.Fatalf("RoleBinding = %+v, %v", rb, err)
				}
				if owners := rb.OwnerReferences; len(owners) != 1 || owners[0].Kind != kindServiceAccount || owners[0].UID != sa.UID {
					t.Errorf("RoleBinding owners = %+v, want the ServiceAccount", owners)
				}
			}

			trs := fk.tokenRequests()
			if len(trs) != 1 || trs[0].Spec.BoundObjectRef != nil {
				t.Errorf("TokenRequests = %+v, want one unbound (the ServiceAccount dies with the lease)", trs)
			}
			cfg, err := clientcmd.Load([]byte(resp.Data["kubeconfig"].(string)))
			if err != nil || cfg.Contexts[cfg.CurrentContext].Namespace != tc.wantNS {
				t.Errorf("kubeconfig namespace wrong: %v", err)
			}

			if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if left := leaseKubeObjects(t, fk); len(left) != 0 {
				t.Errorf("objects left after revoke: %v", left)
			}
		})
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestEphemeralBadRequests(t *testing.T) {
	roles := map[string]map[string]interface{}{
		"one":      {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a"},
		"two":      {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a,team-b"},
		"selector": {"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespace_selector": `{"matchLabels":{"team":"a"}}`},
		"cluster":  {"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "team-a"},
	}
	cases := []struct {
		name, role string
		request    map[string]interface{}
		want       string
	}{
		{"namespace outside the list", "one", map[string]interface{}{"kubernetes_namespace": "team-b"}, `namespace "team-b" is not allowed`},
		{"no namespace with two allowed", "two", nil, "needs kubernetes_namespace"},
		{"invalid namespace name", "two", map[string]interface{}{"kubernetes_namespace": "Team_A"}, "not a valid Kubernetes namespace name"},
		{"selector does not match", "selector", map[string]interface{}{"kubernetes_namespace": "team-b"}, "labels do not match"},
		{"selector, namespace missing", "selector", map[string]interface{}{"kubernetes_namespace": "team-z"}, "does not exist"},
		{"cluster binding not allowed", "cluster", map[string]interface{}{"cluster_role_binding": true}, "not allowed by this role"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := ephemeralBackend(t, roles[tc.role])
			mustBadRequest(t, b, s, logical.ReadOperation, "creds/eph", tc.request, tc.want)
			if left := leaseKubeObjects(t, fk); len(left) != 0 || len(fk.tokenRequests()) != 0 {
				t.Errorf("a refused request created %v", left)
			}
		})
	}
	t.Run("namespace on a service-account role", func(t *testing.T) {
		b, s, _ := newConfiguredBackend(t)
		mustBadRequest(t, b, s, logical.ReadOperation, "creds/"+testRole, map[string]interface{}{"kubernetes_namespace": "team-a"}, `may only restate "scanner-namespace"`)
	})
	t.Run("selector matches", func(t *testing.T) {
		b, s, _ := ephemeralBackend(t, roles["selector"])
		mustOK(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespace": "team-a"})
	})
}

func TestEphemeralRoleBadInput(t *testing.T) {
	cases := []struct {
		name   string
		fields map[string]interface{}
		want   string
	}{
		{"two modes", map[string]interface{}{"kubernetes_role_name": "r", "service_account_name": "sa", "service_account_namespace": "ns", "allowed_kubernetes_namespaces": "a"}, "set exactly one"},
		{"three modes", map[string]interface{}{"kubernetes_role_name": "r", "generated_role_rules": podReaderRules, "service_account_name": "sa"}, "got 3"},
		{"no namespaces allowed", map[string]interface{}{"kubernetes_role_name": "r"}, "allowed_kubernetes_namespaces"},
		{"bad allowed namespace", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "team_a"}, "not a valid Kubernetes namespace name"},
		{"service_account_namespace with an ephemeral mode", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "service_account_namespace": "a"}, "applies only with service_account_name"},
		{"ephemeral fields with service_account_name", map[string]interface{}{"service_account_name": "sa", "service_account_namespace": "ns", "allowed_kubernetes_namespaces": "a"}, "apply only with"},
		{"bad role type", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "kubernetes_role_type": "Group"}, "Role or ClusterRole"},
		{"cluster binding with a Role", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "allow_cluster_role_binding": true}, "needs kubernetes_role_type=ClusterRole"},
		{"rules not YAML", map[string]interface{}{"generated_role_rules": "rules: [", "allowed_kubernetes_namespaces": "a"}, "YAML or JSON"},
		{"rules with a typo", map[string]interface{}{"generated_role_rules": `[{"apiGroups":[""],"resource":["pods"],"verbs":["get"]}]`, "allowed_kubernetes_namespaces": "a"}, "YAML or JSON"},
		{"rule without verbs", map[string]interface{}{"generated_role_rules": `[{"apiGroups":[""],"resources":["pods"]}]`, "allowed_kubernetes_namespaces": "a"}, "no verbs"},
		{"rule without apiGroups", map[string]interface{}{"generated_role_rules": `[{"resources":["pods"],"verbs":["get"]}]`, "allowed_kubernetes_namespaces": "a"}, "needs apiGroups"},
		{"nonResourceURLs in a Role", map[string]interface{}{"generated_role_rules": `[{"nonResourceURLs":["/x"],"verbs":["get"]}]`, "allowed_kubernetes_namespaces": "a"}, "only a ClusterRole"},
		{"empty rules", map[string]interface{}{"generated_role_rules": "rules: []", "allowed_kubernetes_namespaces": "a"}, "no rule"},
		{"malformed selector", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespace_selector": "team in (a"}, "selector"},
		{"selector matching everything", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespace_selector": "{matchLabels: {}}"}, "selector"},
		{"template without randomness", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "name_template": "scanner-{{ .Namespace }}"}, "random"},
		{"template rendering upper case", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "name_template": "{{ .RoleName }}-{{ random 4 }}"}, "not a valid Kubernetes name"},
		{"template too long", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "name_template": "x{{ random 63 }}"}, "at most 63"},
		{"template not parsing", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "name_template": "{{ random 4 "}, "does not parse"},
		{"template unknown field", map[string]interface{}{"kubernetes_role_name": "r", "allowed_kubernetes_namespaces": "a", "name_template": "{{ .Nope }}-{{ random 4 }}"}, "does not render"},
		{"bad role name", map[string]interface{}{"kubernetes_role_name": "Pod Reader", "allowed_kubernetes_namespaces": "a"}, "not a valid name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureCluster(t, b, s)
			data := map[string]interface{}{"cluster": testCluster}
			for k, v := range tc.fields {
				data[k] = v
			}
			mustBadRequest(t, b, s, logical.CreateOperation, "roles/eph", data, tc.want)
			if role, _ := getRole(context.Background(), s, "eph"); role != nil {
				t.Error("a refused role was stored")
			}
		})
	}
}

func TestEphemeralNameTemplate(t *testing.T) {
	b, s, _ := ephemeralBackend(t, map[string]interface{}{
		"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespaces": "team-a",
		"name_template": `scan-{{ dns 10 .DisplayName }}-{{ .Namespace }}-{{ random 8 }}`,
	})
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/eph", Storage: s, DisplayName: "oidc-Jane.Doe"}
	resp, err := b.HandleRequest(context.Background(), req)
	if err != nil || resp.IsError() {
		t.Fatal(err, resp.Error())
	}
	name := resp.Data["service_account_name"].(string)
	if !strings.HasPrefix(name, "scan-oidc-jane-team-a-") || len(name) != len("scan-oidc-jane-team-a-")+8 {
		t.Errorf("name = %q", name)
	}
}

// Kubernetes refuses a binding the plugin could not grant itself (RBAC
// escalation prevention): the error says so and the ServiceAccount goes.
func TestEphemeralEscalationRefused(t *testing.T) {
	b, s, fk := ephemeralBackend(t, map[string]interface{}{"kubernetes_role_name": "cluster-admin", "kubernetes_role_type": "ClusterRole", "allowed_kubernetes_namespaces": "team-a"})
	fk.clientset.PrependReactor("create", "rolebindings", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: rbacv1.GroupName, Resource: "rolebindings"}, "x",
			errors.New(`user "system:serviceaccount:vault-plugin-scanner:vault-plugin-scanner" is attempting to grant RBAC permissions not currently held`))
	})
	_, err := request(t, b, s, logical.ReadOperation, "creds/eph", nil)
	if err == nil || !strings.Contains(err.Error(), "attempting to grant RBAC permissions not currently held") || !strings.Contains(err.Error(), "creating RoleBinding") {
		t.Fatalf("error = %v", err)
	}
	if left := leaseKubeObjects(t, fk); len(left) != 0 {
		t.Errorf("objects left: %v", left)
	}
	if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 0 {
		t.Errorf("WAL entries left: %d", len(wals))
	}
}

func TestEphemeralTokenFailureLeavesNothing(t *testing.T) {
	b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"})
	fk.setTokenErr(apierrors.NewInternalError(errors.New("etcd timeout")))
	if _, err := request(t, b, s, logical.ReadOperation, "creds/eph", nil); err == nil {
		t.Fatal("issue succeeded despite the TokenRequest failure")
	}
	if left := leaseKubeObjects(t, fk); len(left) != 0 {
		t.Errorf("objects left: %v", left)
	}
}

func TestEphemeralWALRollback(t *testing.T) {
	b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"})
	fk.setTokenErr(apierrors.NewInternalError(errors.New("etcd timeout")))
	deletesFail := true
	fk.clientset.PrependReactor("delete", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if deletesFail {
			return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
		}
		return false, nil, nil
	})
	if _, err := request(t, b, s, logical.ReadOperation, "creds/eph", nil); err == nil {
		t.Fatal("issue succeeded")
	}
	if got := leaseKubeObjects(t, fk); !equalCounts(got, map[string]int{kindServiceAccount: 1, kindRole: 1, kindRoleBinding: 1}) {
		t.Fatalf("setup: objects = %v", got)
	}
	deletesFail = false
	rollbackNow(t, b, s)
	if left := leaseKubeObjects(t, fk); len(left) != 0 {
		t.Errorf("objects left after rollback: %v", left)
	}
}

func TestEphemeralCheckNamesPermissions(t *testing.T) {
	cases := []struct {
		name        string
		role        map[string]interface{}
		denied      map[string]bool // "verb resource" the plugin lacks
		wantMissing []string
		wantChecked []string
	}{
		{
			name:        "generated rules held: escalate not needed",
			role:        map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"},
			denied:      map[string]bool{"escalate roles": true},
			wantChecked: []string{`create serviceaccounts in namespace "team-a"`, `delete serviceaccounts in namespace "team-a"`, `create rolebindings in namespace "team-a"`, `create roles in namespace "team-a"`},
		},
		{
			name:        "generated rules not held and no escalate",
			role:        map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"},
			denied:      map[string]bool{"escalate roles": true, "list pods": true},
			wantMissing: []string{`escalate roles in namespace "team-a"`},
		},
		{
			name:        "selector checked in the namespaces it matches",
			role:        map[string]interface{}{"kubernetes_role_name": "pod-reader", "allowed_kubernetes_namespace_selector": "team=a"},
			denied:      map[string]bool{"bind roles": true},
			wantMissing: []string{`bind roles "pod-reader" in namespace "team-a"`},
			wantChecked: []string{`create serviceaccounts in namespace "team-a"`, "get namespaces cluster-wide"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := ephemeralBackend(t, tc.role)
			fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
				return !tc.denied[attrs.Verb+" "+attrs.Resource]
			})
			resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
			checked := strings.Join(resp.Data["checked_permissions"].([]string), "\n")
			for _, want := range tc.wantChecked {
				if !strings.Contains(checked, want) {
					t.Errorf("check did not ask for %q:\n%s", want, checked)
				}
			}
			if strings.Contains(checked, "serviceaccounts cluster-wide") {
				t.Errorf("namespaced rights checked cluster-wide:\n%s", checked)
			}
			missing := resp.Data["missing_permissions"].([]string)
			if resp.Data["ok"] != (len(tc.wantMissing) == 0) || strings.Join(missing, "|") != strings.Join(tc.wantMissing, "|") {
				t.Errorf("ok = %v, missing = %q, want %q", resp.Data["ok"], missing, tc.wantMissing)
			}
		})
	}
}

// The key is made once per mount, stored seal-wrapped, cached on the
// backend and re-read when storage says it changed.
func TestOwnershipKey(t *testing.T) {
	ctx := context.Background()
	storedKey := func(t *testing.T, s logical.Storage) []byte {
		t.Helper()
		entry, err := s.Get(ctx, ownershipKeyStorageKey)
		if err != nil || entry == nil {
			t.Fatalf("stored key: %v, %v", entry, err)
		}
		var stored storedOwnershipKey
		if err := entry.DecodeJSON(&stored); err != nil {
			t.Fatal(err)
		}
		return stored.Key
	}
	putKey := func(t *testing.T, s logical.Storage, key []byte) {
		t.Helper()
		entry, err := logical.StorageEntryJSON(ownershipKeyStorageKey, storedOwnershipKey{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, entry); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("created on first use, stored seal-wrapped, then reused", func(t *testing.T) {
		b, s, _ := newTestBackend(t)
		if entry, _ := s.Get(ctx, ownershipKeyStorageKey); entry != nil {
			t.Fatal("a key exists before first use")
		}
		key, err := b.ownershipKey(ctx, s)
		if err != nil || len(key) != ownershipKeyBytes {
			t.Fatalf("key of %d bytes, %v; want %d bytes", len(key), err, ownershipKeyBytes)
		}
		if !bytes.Equal(storedKey(t, s), key) {
			t.Error("the key in use is not the stored one")
		}
		again, _ := b.ownershipKey(ctx, s)
		if !bytes.Equal(again, key) {
			t.Error("a second use made another key")
		}
		if !slices.Contains(b.PathsSpecial.SealWrapStorage, ownershipKeyStorageKey) {
			t.Errorf("SealWrapStorage %v does not hold %q", b.PathsSpecial.SealWrapStorage, ownershipKeyStorageKey)
		}
	})

	for _, drop := range []struct {
		name string
		do   func(b *backend)
	}{
		{"invalidated", func(b *backend) { b.invalidate(ctx, ownershipKeyStorageKey) }},
		{"cleaned", func(b *backend) { b.Clean(ctx) }},
	} {
		t.Run("cached until "+drop.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			first, err := b.ownershipKey(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			replaced := bytes.Repeat([]byte{7}, ownershipKeyBytes)
			putKey(t, s, replaced) // as replication would
			if cached, _ := b.ownershipKey(ctx, s); !bytes.Equal(cached, first) {
				t.Fatal("the cached key was not used")
			}
			b.invalidate(ctx, "roles/unrelated")
			if cached, _ := b.ownershipKey(ctx, s); !bytes.Equal(cached, first) {
				t.Fatal("another key's invalidation dropped the cache")
			}
			drop.do(b)
			if got, _ := b.ownershipKey(ctx, s); !bytes.Equal(got, replaced) {
				t.Error("the stored key was not re-read")
			}
		})
	}

	t.Run("each mount has its own", func(t *testing.T) {
		b1, s1, _ := newTestBackend(t)
		b2, s2, _ := newTestBackend(t)
		k1, _ := b1.ownershipKey(ctx, s1)
		k2, _ := b2.ownershipKey(ctx, s2)
		if bytes.Equal(k1, k2) {
			t.Error("two mounts share a key")
		}
	})

	t.Run("a stored key of the wrong size is refused, never replaced", func(t *testing.T) {
		b, s, _ := newTestBackend(t)
		putKey(t, s, []byte("short"))
		if _, err := b.ownershipKey(ctx, s); err == nil {
			t.Fatal("a 5-byte key was accepted")
		}
		if got := storedKey(t, s); string(got) != "short" {
			t.Error("the stored key was replaced")
		}
	})

	t.Run("made at mount start where the node writes", func(t *testing.T) {
		b, s, _ := newTestBackend(t)
		if err := b.Initialize(ctx, &logical.InitializationRequest{Storage: s}); err != nil {
			t.Fatal(err)
		}
		storedKey(t, s)
	})
}

// The mark covers every field tidy and rollback decide by: changing any of
// them, or using another mount's key, breaks it.
func TestOwnerMark(t *testing.T) {
	key := ownershipKey(bytes.Repeat([]byte{1}, ownershipKeyBytes))
	other := ownershipKey(bytes.Repeat([]byte{2}, ownershipKeyBytes))
	marked := func() *corev1.Secret {
		s := boundSecret("vault-scanner-mark", testLeaseMeta("issue-1"))
		s.Annotations[ownerMarkAnnotation] = key.mark(kindSecret, s)
		return s
	}
	cases := []struct {
		name   string
		kind   string
		key    ownershipKey
		tamper func(*corev1.Secret)
		want   bool
	}{
		{name: "as marked", want: true},
		{name: "extra annotations and labels are not covered", tamper: func(s *corev1.Secret) {
			s.Annotations["team"] = "a"
			s.Labels["x"] = "y"
		}, want: true},
		{name: "another mount's key", key: other},
		{name: "another kind", kind: kindServiceAccount},
		{name: "another namespace", tamper: func(s *corev1.Secret) { s.Namespace = "elsewhere" }},
		{name: "another name", tamper: func(s *corev1.Secret) { s.Name = "db-credentials" }},
		{name: "another issue id", tamper: func(s *corev1.Secret) { s.Annotations[issueAnnotation] = "issue-2" }},
		{name: "another cluster", tamper: func(s *corev1.Secret) { s.Annotations[clusterAnnotation] = "cluster-b" }},
		{name: "expires-at back-dated", tamper: func(s *corev1.Secret) { s.Annotations[expiresAtAnnotation] = "2000-01-01T00:00:00Z" }},
		{name: "expires-at removed", tamper: func(s *corev1.Secret) { delete(s.Annotations, expiresAtAnnotation) }},
		{name: "mark removed", tamper: func(s *corev1.Secret) { delete(s.Annotations, ownerMarkAnnotation) }},
		{name: "mark not base64url", tamper: func(s *corev1.Secret) { s.Annotations[ownerMarkAnnotation] = "not a mark!" }},
		{name: "mark truncated", tamper: func(s *corev1.Secret) {
			s.Annotations[ownerMarkAnnotation] = s.Annotations[ownerMarkAnnotation][:20]
		}},
		{name: "no key", key: ownershipKey{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := marked()
			if tc.tamper != nil {
				tc.tamper(s)
			}
			kind, k := kindSecret, key
			if tc.kind != "" {
				kind = tc.kind
			}
			if tc.key != nil {
				k = tc.key
			}
			if got := k.owns(kind, s); got != tc.want {
				t.Errorf("owns = %v, want %v", got, tc.want)
			}
		})
	}
}

// The mark is exactly what the documented canonical text gives, so other
// tools (and acceptance tests) can compute it.
func TestOwnerMarkCanonicalText(t *testing.T) {
	key := ownershipKey(bytes.Repeat([]byte{3}, ownershipKeyBytes))
	obj := &metav1.ObjectMeta{Name: "vault-scanner-x", Namespace: "team-a", Annotations: map[string]string{
		issueAnnotation: "abc123", clusterAnnotation: "cluster-a", expiresAtAnnotation: "2030-01-02T03:04:05Z", roleAnnotation: "ignored",
	}}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("v1\nSecret\nteam-a\nvault-scanner-x\nabc123\ncluster-a\n2030-01-02T03:04:05Z"))
	if got, want := key.mark(kindSecret, obj), base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); got != want {
		t.Errorf("mark = %s, want %s", got, want)
	}
}

// assertMarked fails unless every object carries b's mark.
func assertMarked(t *testing.T, b *backend, s logical.Storage, kind string, objs []metav1.Object) {
	t.Helper()
	key, err := b.ownershipKey(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		if !key.owns(kind, obj) {
			t.Errorf("%s %s/%s does not carry the mount's mark", kind, obj.GetNamespace(), obj.GetName())
		}
	}
}

// Every object the plugin creates carries its mark.
func TestEveryCreatedObjectIsMarked(t *testing.T) {
	t.Run("bound Secret", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
		objs, err := fk.listManaged(kindSecret, "")
		if err != nil || len(objs) != 1 {
			t.Fatalf("Secrets: %d, %v; want 1", len(objs), err)
		}
		assertMarked(t, b, s, kindSecret, objs)
	})

	t.Run("ephemeral objects of every kind", func(t *testing.T) {
		b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a,team-b"})
		mustOK(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespaces": "team-a,team-b"})
		kinds := 0
		for _, kind := range kindsInDeleteOrder {
			objs, err := fk.listManaged(kind, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) > 0 {
				kinds++
			}
			assertMarked(t, b, s, kind, objs)
		}
		if kinds < 3 {
			t.Fatalf("the lease created objects of %d kinds; the test needs several", kinds)
		}
	})

	t.Run("rotation Secret", func(t *testing.T) {
		f := newRotationFixture(t, nil)
		f.rotate(t)
		objs, err := f.fk.listManaged(kindSecret, pluginNamespace)
		if err != nil || len(objs) != 1 {
			t.Fatalf("rotation Secrets: %d, %v; want 1", len(objs), err)
		}
		assertMarked(t, f.b, f.s, kindSecret, objs)
	})
}

// failingKeyStorage fails every read and write of the ownership key.
type failingKeyStorage struct{ logical.Storage }

var errKeyStorage = errors.New("storage backend unavailable")

func (f failingKeyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if key == ownershipKeyStorageKey {
		return nil, errKeyStorage
	}
	return f.Storage.Get(ctx, key)
}

// Without its key the plugin cannot mark what it creates, so it creates
// nothing: no WAL entry, no object, and an internal error (500).
func TestIssueWithoutOwnershipKeyCreatesNothing(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	failing := failingKeyStorage{s}
	resp, err := request(t, b, failing, logical.ReadOperation, "creds/"+testRole, nil)
	if err == nil || !errors.Is(err, errKeyStorage) || (resp != nil && resp.IsError()) {
		t.Fatalf("issue without a key: %v, %v; want the storage error as an internal error", resp, err)
	}
	var coded logical.HTTPCodedError
	if errors.As(err, &coded) {
		t.Errorf("status %d; the plugin's own failure is a 500", coded.Code())
	}
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets created: %v", names(left))
	}
	if wals := walEntries(t, s); len(wals) != 0 {
		t.Errorf("WAL entries written: %d", len(wals))
	}
	if len(fk.tokenRequests()) != 0 {
		t.Error("a token was requested")
	}
}
