package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
)

var teams = []string{"team-a", "team-b", "team-c"}

// multiBackend is ephemeralBackend with role "eph" allowing team-a, team-b
// and team-c.
func multiBackend(t *testing.T, fields map[string]interface{}) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	data := map[string]interface{}{"allowed_kubernetes_namespaces": strings.Join(teams, ",")}
	for k, v := range fields {
		data[k] = v
	}
	if data["allowed_kubernetes_namespaces"] == "" {
		delete(data, "allowed_kubernetes_namespaces")
	}
	return ephemeralBackend(t, data)
}

// managedIn lists the plugin's objects of kind in ns, by name.
func managedIn(t *testing.T, fk *fakeKube, kind, ns string) []metav1.Object {
	t.Helper()
	objs, err := fk.listManaged(kind, ns)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// recordDeletes records every delete as "Kind namespace/name", in order.
func recordDeletes(fk *fakeKube) func() []string {
	var mu sync.Mutex
	var order []string
	kinds := map[string]string{}
	for _, k := range objectKinds {
		kinds[k.resource] = k.name
	}
	fk.clientset.PrependReactor("delete", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		del := action.(k8stesting.DeleteActionImpl)
		order = append(order, objectRef{Kind: kinds[del.Resource.Resource], Namespace: del.Namespace, Name: del.Name}.String())
		return false, nil, nil
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(order)
	}
}

// One credential for several namespaces: one ServiceAccount in the first,
// a binding (and a generated Role) in each, every binding naming that
// ServiceAccount; the kubeconfig's context is the first namespace; revoke
// deletes the ServiceAccount first, then every binding and Role.
func TestMultiNamespaceCredential(t *testing.T) {
	cases := []struct {
		name    string
		role    map[string]interface{}
		roleRef rbacv1.RoleRef // Name "" means the generated name
		// perNS are the kinds created in each listed namespace; cluster
		// the cluster-scoped ones.
		perNS   []string
		cluster []string
	}{
		{
			name:    "existing Role",
			role:    map[string]interface{}{"kubernetes_role_name": "pod-reader"},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindRole, Name: "pod-reader"},
			perNS:   []string{kindRoleBinding},
		},
		{
			name:    "existing ClusterRole",
			role:    map[string]interface{}{"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allow_cluster_role_binding": true},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindClusterRole, Name: "view"},
			perNS:   []string{kindRoleBinding},
		},
		{
			name:    "generated Role",
			role:    map[string]interface{}{"generated_role_rules": podReaderRules},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindRole},
			perNS:   []string{kindRole, kindRoleBinding},
		},
		{
			name:    "generated ClusterRole",
			role:    map[string]interface{}{"generated_role_rules": podReaderRules, "kubernetes_role_type": "ClusterRole"},
			roleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kindClusterRole},
			perNS:   []string{kindRoleBinding},
			cluster: []string{kindClusterRole},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := multiBackend(t, tc.role)
			resp := mustOK(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespaces": "team-b, team-a"})
			name := resp.Data["service_account_name"].(string)
			if resp.Data["service_account_namespace"] != "team-b" || resp.Data["kubernetes_namespaces"] != "team-b,team-a" {
				t.Errorf("service_account_namespace %v, kubernetes_namespaces %v; want team-b and team-b,team-a", resp.Data["service_account_namespace"], resp.Data["kubernetes_namespaces"])
			}
			cfg, err := clientcmd.Load([]byte(resp.Data["kubeconfig"].(string)))
			if err != nil || cfg.Contexts[cfg.CurrentContext].Namespace != "team-b" {
				t.Errorf("kubeconfig context namespace is not the first namespace: %v", err)
			}

			// Exactly one ServiceAccount, in the first namespace.
			sas := managedIn(t, fk, kindServiceAccount, "")
			if len(sas) != 1 || sas[0].GetNamespace() != "team-b" || sas[0].GetName() != name {
				t.Fatalf("ServiceAccounts %v, want one team-b/%s", sas, name)
			}
			sa := sas[0]
			trs := fk.tokenRequests()
			if len(trs) != 1 || trs[0].Spec.BoundObjectRef != nil {
				t.Fatalf("TokenRequests %+v, want one, unbound", trs)
			}
			claims, err := parseTokenClaims(resp.Data["service_account_token"].(string))
			if err != nil || claims.Sub != "system:serviceaccount:team-b:"+name {
				t.Errorf("token subject %q (%v), want the ServiceAccount in team-b", claims.Sub, err)
			}

			wantRef := tc.roleRef
			if wantRef.Name == "" {
				wantRef.Name = name
			}
			subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: "team-b"}
			var wantDeletes []string
			for _, ns := range []string{"team-b", "team-a"} {
				for _, kind := range tc.perNS {
					if objs := managedIn(t, fk, kind, ns); len(objs) != 1 || objs[0].GetName() != name {
						t.Errorf("%s in %s: %v, want one named %s", kind, ns, objs, name)
					}
				}
				// The token is good in each namespace: the fake does not
				// authorize, so check what the API server would.
				rb, err := fk.clientset.RbacV1().RoleBindings(ns).Get(context.Background(), name, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("RoleBinding in %s: %v", ns, err)
				}
				if rb.RoleRef != wantRef || len(rb.Subjects) != 1 || rb.Subjects[0] != subject {
					t.Errorf("RoleBinding %s/%s: roleRef %+v subjects %+v, want %+v and %+v", ns, name, rb.RoleRef, rb.Subjects, wantRef, subject)
				}
				// Owner references only in the ServiceAccount's namespace:
				// Kubernetes has none across namespaces.
				owned := len(rb.OwnerReferences) == 1 && rb.OwnerReferences[0].UID == sa.GetUID()
				if owned != (ns == "team-b") || (ns != "team-b" && len(rb.OwnerReferences) != 0) {
					t.Errorf("RoleBinding %s/%s owners %+v", ns, name, rb.OwnerReferences)
				}
				for _, kind := range tc.perNS {
					wantDeletes = append(wantDeletes, objectRef{Kind: kind, Namespace: ns, Name: name}.String())
				}
			}
			if objs := managedIn(t, fk, kindRoleBinding, "team-c"); len(objs) != 0 {
				t.Errorf("team-c was not asked for, has %v", objs)
			}
			for _, kind := range tc.cluster {
				if objs := managedIn(t, fk, kind, ""); len(objs) != 1 {
					t.Errorf("%s: %v, want one", kind, objs)
				}
				wantDeletes = append(wantDeletes, objectRef{Kind: kind, Name: name}.String())
			}

			var lease leaseRecord
			if lease, err = leaseRecordFrom(resp.Secret.InternalData); err != nil || len(lease.Objects) != 1+2*len(tc.perNS)+len(tc.cluster) {
				t.Fatalf("lease objects %v (%v)", lease.Objects, err)
			}

			deletes := recordDeletes(fk)
			if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if left := leaseKubeObjects(t, fk); len(left) != 0 {
				t.Errorf("objects left after revoke: %v", left)
			}
			got := deletes()
			if len(got) == 0 || got[0] != (objectRef{Kind: kindServiceAccount, Namespace: "team-b", Name: name}).String() {
				t.Fatalf("deletes %v: the ServiceAccount (the token) must go first", got)
			}
			// Then by rank: every binding before any Role.
			ranks := make([]int, len(got))
			for i, d := range got {
				ranks[i] = rankOf(strings.Fields(d)[0])
			}
			if !slices.IsSorted(ranks) {
				t.Errorf("deletes %v are not in revoke order", got)
			}
			rest := slices.Clone(got[1:])
			slices.Sort(rest)
			slices.Sort(wantDeletes)
			if !slices.Equal(rest, wantDeletes) {
				t.Errorf("deleted after the ServiceAccount %v, want %v", rest, wantDeletes)
			}
		})
	}
}

// The WAL entry, stored before the first object, names every object the
// issue will create, in every namespace.
func TestMultiNamespaceWALListsEveryObject(t *testing.T) {
	b, s, fk := multiBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules})
	var atToken []objectRef
	fk.clientset.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "token" {
			// The first create: the entry must exist already.
			if ids := walEntries(t, s); len(ids) != 1 {
				t.Errorf("creating the ServiceAccount with %d WAL entries, want 1", len(ids))
			}
			return false, nil, nil
		}
		ids := walEntries(t, s)
		if len(ids) != 1 {
			t.Errorf("WAL entries at TokenRequest: %d, want 1", len(ids))
			return false, nil, nil
		}
		entry, err := framework.GetWAL(context.Background(), s, ids[0])
		if err != nil {
			t.Error(err)
			return false, nil, nil
		}
		raw, _ := json.Marshal(entry.Data)
		var w walEntry
		if err := json.Unmarshal(raw, &w); err != nil {
			t.Error(err)
		}
		atToken = w.Objects
		return false, nil, nil
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespaces": "team-a,team-b,team-c"})
	name := resp.Data["service_account_name"].(string)
	want := []string{"ServiceAccount team-a/" + name}
	for _, ns := range teams {
		want = append(want, "Role "+ns+"/"+name, "RoleBinding "+ns+"/"+name)
	}
	var got []string
	for _, ref := range atToken {
		got = append(got, ref.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("WAL entry %v, want %v", got, want)
	}
	if ids := walEntries(t, s); len(ids) != 0 {
		t.Errorf("WAL entries after the lease: %d", len(ids))
	}
}

// Every bad kubernetes_namespaces is a 400 before anything happens: no
// object, no WAL entry, no TokenRequest.
func TestMultiNamespaceBadInput(t *testing.T) {
	many := make([]string, maxRequestNamespaces+1)
	for i := range many {
		many[i] = fmt.Sprintf("ns-%d", i)
	}
	long := strings.Repeat("x", 300)
	cases := []struct {
		name    string
		role    map[string]interface{}
		request map[string]interface{}
		want    string
	}{
		{"namespace not allowed", nil, map[string]interface{}{"kubernetes_namespaces": "team-a,team-z"}, `namespace "team-z" is not allowed`},
		{"selector does not match the second", map[string]interface{}{"allowed_kubernetes_namespaces": "", "allowed_kubernetes_namespace_selector": "team=a"}, map[string]interface{}{"kubernetes_namespaces": "team-a,team-b"}, "labels do not match"},
		{"invalid name", nil, map[string]interface{}{"kubernetes_namespaces": "team-a,Team_B"}, "not a valid Kubernetes namespace name"},
		{"long invalid name is clipped", nil, map[string]interface{}{"kubernetes_namespaces": "team-a," + long}, "not a valid Kubernetes namespace name"},
		{"duplicate", nil, map[string]interface{}{"kubernetes_namespaces": "team-a,team-b,team-a"}, `names "team-a" more than once`},
		{"empty entry", nil, map[string]interface{}{"kubernetes_namespaces": "team-a,,team-b"}, "empty entry (position 2)"},
		{"trailing comma", nil, map[string]interface{}{"kubernetes_namespaces": "team-a,"}, "empty entry"},
		{"empty", nil, map[string]interface{}{"kubernetes_namespaces": ""}, "names no namespace"},
		{"too many", map[string]interface{}{"allowed_kubernetes_namespaces": "*"}, map[string]interface{}{"kubernetes_namespaces": strings.Join(many, ",")}, "at most 32"},
		{"both parameters", nil, map[string]interface{}{"kubernetes_namespaces": "team-a,team-b", "kubernetes_namespace": "team-a"}, "not both"},
		{"with a cluster-wide binding", map[string]interface{}{"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole", "allow_cluster_role_binding": true}, map[string]interface{}{"kubernetes_namespaces": "team-a,team-b", "cluster_role_binding": true}, "already spans every namespace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			role := map[string]interface{}{"kubernetes_role_name": "pod-reader"}
			for k, v := range tc.role {
				role[k] = v
			}
			b, s, fk := multiBackend(t, role)
			var reviews int
			fk.clientset.PrependReactor("create", "selfsubjectaccessreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
				reviews++
				return false, nil, nil
			})
			resp, err := request(t, b, s, logical.ReadOperation, "creds/eph", tc.request)
			status, msg := statusOf(resp, err)
			if status != 400 || !strings.Contains(msg, tc.want) {
				t.Fatalf("status %d %q, want a 400 saying %q", status, msg, tc.want)
			}
			if len(msg) > 2*clipBytes+300 || strings.Contains(msg, long) {
				t.Errorf("the error echoes unbounded input (%d bytes)", len(msg))
			}
			if left := leaseKubeObjects(t, fk); len(left) != 0 || len(fk.tokenRequests()) != 0 || len(walEntries(t, s)) != 0 || reviews != 0 {
				t.Errorf("a refused request created %v, %d TokenRequests, %d WAL entries, %d access reviews", left, len(fk.tokenRequests()), len(walEntries(t, s)), reviews)
			}
		})
	}
	t.Run("on a role of an existing service account", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		mustBadRequest(t, b, s, logical.ReadOperation, "creds/"+testRole, map[string]interface{}{"kubernetes_namespaces": "team-a,team-b"}, "kubernetes_namespaces does not apply")
		if len(fk.managedSecrets(t)) != 0 || len(fk.tokenRequests()) != 0 || len(walEntries(t, s)) != 0 {
			t.Error("a refused request created something")
		}
	})
	t.Run("one namespace is fine", func(t *testing.T) {
		b, s, _ := multiBackend(t, map[string]interface{}{"kubernetes_role_name": "pod-reader"})
		resp := mustOK(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespaces": "team-c"})
		if resp.Data["service_account_namespace"] != "team-c" || resp.Data["kubernetes_namespaces"] != "team-c" {
			t.Errorf("issued %v", resp.Data)
		}
	})
}

// Before creating anything the plugin asks whether it may delete every
// kind in every listed namespace; a no in the second is a 502 naming it,
// and nothing is created.
func TestMultiNamespaceChecksRevocableEverywhere(t *testing.T) {
	b, s, fk := multiBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules})
	var mu sync.Mutex
	asked := map[string]bool{}
	denyIn := "team-b"
	fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
		mu.Lock()
		asked[attrs.Verb+" "+attrs.Resource+" "+attrs.Namespace] = true
		deny := denyIn
		mu.Unlock()
		return !(attrs.Resource == "rolebindings" && attrs.Namespace == deny)
	})
	resp, err := request(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespaces": "team-a,team-b,team-c"})
	if status, msg := statusOf(resp, err); status != 502 || !strings.Contains(msg, `delete rolebindings in namespace "team-b"`) {
		t.Fatalf("status %d %q, want a 502 naming delete rolebindings in team-b", status, msg)
	}
	if left := leaseKubeObjects(t, fk); len(left) != 0 || len(fk.tokenRequests()) != 0 || len(walEntries(t, s)) != 0 {
		t.Errorf("a lease that could not be revoked left %v, %d TokenRequests, %d WAL entries", left, len(fk.tokenRequests()), len(walEntries(t, s)))
	}

	mu.Lock()
	denyIn = ""
	mu.Unlock()
	mustOK(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespaces": "team-a,team-b,team-c"})
	mu.Lock()
	defer mu.Unlock()
	want := []string{"delete serviceaccounts team-a"}
	for _, ns := range teams {
		want = append(want, "delete roles "+ns, "delete rolebindings "+ns)
	}
	for _, w := range want {
		if !asked[w] {
			t.Errorf("never asked %q; asked %v", w, asked)
		}
	}
}

// A failure creating the second namespace's binding undoes everything
// already created, in both namespaces, and leaves no WAL entry; if the
// deletes fail too, the WAL entry stays and rollback finishes the job.
func TestMultiNamespaceSecondBindingFailureRollsBack(t *testing.T) {
	for _, deletesFail := range []bool{false, true} {
		t.Run(fmt.Sprintf("deletes fail %v", deletesFail), func(t *testing.T) {
			b, s, fk := multiBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules})
			fk.clientset.PrependReactor("create", "rolebindings", func(action k8stesting.Action) (bool, runtime.Object, error) {
				if action.GetNamespace() != "team-b" {
					return false, nil, nil
				}
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: rbacv1.GroupName, Resource: "rolebindings"}, "x", errors.New("attempting to grant RBAC permissions not currently held"))
			})
			failing := deletesFail
			fk.clientset.PrependReactor("delete", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
				if failing {
					return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
				}
				return false, nil, nil
			})
			resp, err := request(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"kubernetes_namespaces": "team-a,team-b"})
			if status, msg := statusOf(resp, err); status != 502 || !strings.Contains(msg, "creating RoleBinding team-b/") {
				t.Fatalf("status %d %q, want a 502 naming the team-b RoleBinding", status, msg)
			}
			if len(fk.tokenRequests()) != 0 {
				t.Error("a token was requested")
			}
			if !deletesFail {
				if left := leaseKubeObjects(t, fk); len(left) != 0 || len(walEntries(t, s)) != 0 {
					t.Fatalf("left %v and %d WAL entries", left, len(walEntries(t, s)))
				}
				return
			}
			// ServiceAccount and Role in team-a, Role in team-b.
			if got := leaseKubeObjects(t, fk); !equalCounts(got, map[string]int{kindServiceAccount: 1, kindRole: 2, kindRoleBinding: 1}) || len(walEntries(t, s)) != 1 {
				t.Fatalf("objects %v, %d WAL entries; want what was created, covered by one entry", got, len(walEntries(t, s)))
			}
			failing = false
			rollbackNow(t, b, s)
			if left := leaseKubeObjects(t, fk); len(left) != 0 {
				t.Errorf("objects left after rollback: %v", left)
			}
		})
	}
}

// check reports, per namespace, the rights missing there: a namespace the
// plugin holds nothing in is named with its missing rights, the others
// have an empty list.
func TestMultiNamespaceCheckReportsPerNamespace(t *testing.T) {
	b, s, fk := multiBackend(t, map[string]interface{}{"kubernetes_role_name": "pod-reader"})
	fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
		return attrs.Namespace != "team-c"
	})
	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/check", nil)
	perNS := resp.Data["namespaces"].(map[string]interface{})
	if len(perNS) != len(teams) {
		t.Fatalf("namespaces %v, want %v", perNS, teams)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		if m := perNS[ns].([]string); len(m) != 0 {
			t.Errorf("%s: missing %v, want none", ns, m)
		}
	}
	c := perNS["team-c"].([]string)
	for _, want := range []string{`create rolebindings in namespace "team-c"`, `delete rolebindings in namespace "team-c"`, `bind roles "pod-reader" in namespace "team-c"`} {
		if !slices.Contains(c, want) {
			t.Errorf("team-c: missing %v, want it to name %q", c, want)
		}
	}
	if resp.Data["ok"] != false || len(resp.Data["missing_permissions"].([]string)) != len(c) {
		t.Errorf("ok %v, missing_permissions %v: want false and team-c's", resp.Data["ok"], resp.Data["missing_permissions"])
	}
}
