package backend

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

// tidyFixture puts objects of every kind into the fake, each marked by b
// unless forged: for each kind one expired, one not yet expired, one of
// another cluster entry, one without the plugin's label, and one expired
// that carries the plugin's label and annotations but not its mark.
func tidyFixture(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) {
	t.Helper()
	api := fk.api()
	expired, live := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	role := &roleEntry{Cluster: testCluster, ServiceAccountNamespace: testNamespace}
	for _, variant := range []struct {
		name    string
		expires time.Time
		cluster string
		foreign bool
		forged  bool
	}{
		{"expired", expired, testCluster, false, false},
		{"live", live, testCluster, false, false},
		{"other-cluster", expired, "cluster-b", false, false},
		{"foreign", expired, testCluster, true, false},
		{"forged", expired, testCluster, false, true},
	} {
		r := *role
		r.Cluster = variant.cluster
		meta := func(ns string) metav1.ObjectMeta {
			m := objectMeta("tidy-"+variant.name, ns, leaseMeta{roleName: testRole, role: &r, expiresAt: variant.expires, issueID: "i"})
			if variant.foreign {
				m.Labels = nil
			}
			return m
		}
		for _, p := range []plannedObject{
			{kindSecret, &corev1.Secret{ObjectMeta: meta(testNamespace)}},
			{kindServiceAccount, &corev1.ServiceAccount{ObjectMeta: meta(testNamespace)}},
			{kindRole, &rbacv1.Role{ObjectMeta: meta(testNamespace)}},
			{kindRoleBinding, &rbacv1.RoleBinding{ObjectMeta: meta(testNamespace)}},
			{kindClusterRole, &rbacv1.ClusterRole{ObjectMeta: meta("")}},
			{kindClusterRoleBinding, &rbacv1.ClusterRoleBinding{ObjectMeta: meta("")}},
		} {
			if !variant.forged {
				if err := b.markOwned(context.Background(), s, p.kind, p.obj); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := api.CreateObject(context.Background(), p.kind, p.obj); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// names of the objects of kind left in the fake.
func leftOf(t *testing.T, fk *fakeKube, kind string) []string {
	t.Helper()
	objs, err := fk.listMeta(kind, "", "")
	if err != nil {
		t.Fatalf("listing %s: %v", kind, err)
	}
	var out []string
	for _, o := range objs {
		if o.GetName() != testSA {
			out = append(out, o.GetName())
		}
	}
	slices.Sort(out)
	return out
}

// tidy deletes, for every kind, exactly the plugin's expired objects of
// this cluster entry, by UID, and counts them per kind; it reports the
// forged ones.
func TestTidyEveryKind(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	tidyFixture(t, b, s, fk)
	var deletes []*metav1.Preconditions
	fk.clientset.PrependReactor("delete", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		deletes = append(deletes, action.(k8stesting.DeleteActionImpl).DeleteOptions.Preconditions)
		return false, nil, nil
	})
	resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
	if resp.Data["deleted"] != 6 {
		t.Errorf("deleted = %v, want 6 (one per kind)", resp.Data["deleted"])
	}
	byKind := resp.Data["deleted_by_kind"].(map[string]interface{})
	for _, kind := range kindsInDeleteOrder {
		if byKind[kind] != 1 {
			t.Errorf("deleted %s = %v, want 1", kind, byKind[kind])
		}
		if got, want := leftOf(t, fk, kind), []string{"tidy-foreign", "tidy-forged", "tidy-live", "tidy-other-cluster"}; !slices.Equal(got, want) {
			t.Errorf("%s left: %v, want %v", kind, got, want)
		}
	}
	wantUnverified := []string{
		"Secret scanner-namespace/tidy-forged", "ServiceAccount scanner-namespace/tidy-forged",
		"RoleBinding scanner-namespace/tidy-forged", "ClusterRoleBinding tidy-forged",
		"Role scanner-namespace/tidy-forged", "ClusterRole tidy-forged",
	}
	if got := resp.Data["unverified"].([]string); !slices.Equal(got, wantUnverified) {
		t.Errorf("unverified = %v, want %v", got, wantUnverified)
	}
	if got := resp.Data["unverified_total"]; got != len(wantUnverified) {
		t.Errorf("unverified_total = %v, want %d", got, len(wantUnverified))
	}
	for _, pre := range deletes {
		if pre == nil || pre.UID == nil || *pre.UID == "" {
			t.Errorf("tidy deleted without a UID precondition")
		}
	}
}

// Grace keeps recently expired objects; a list the plugin may not make is
// reported, not fatal.
func TestTidyGraceAndSkips(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	tidyFixture(t, b, s, fk)
	resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", map[string]interface{}{"grace": "2h"})
	if resp.Data["deleted"] != 0 {
		t.Errorf("deleted %v objects inside the grace period", resp.Data["deleted"])
	}
	denyList(fk, "secrets")
	resp = mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
	if resp.Data["deleted"] != 5 || len(resp.Data["skipped"].([]string)) != 1 {
		t.Errorf("deleted %v, skipped %v; want 5 and the Secrets", resp.Data["deleted"], resp.Data["skipped"])
	}
	mustBadRequest(t, b, s, logical.UpdateOperation, "tidy", map[string]interface{}{"grace": "-1s"}, "negative")
	mustBadRequest(t, b, s, logical.UpdateOperation, "tidy", map[string]interface{}{"graec": "1m"}, "unknown field")
}

func denyList(fk *fakeKube, resource string) {
	fk.clientset.PrependReactor("list", resource, func(action k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "", errors.New("RBAC: list not granted"))
	})
}

func TestTidyConfig(t *testing.T) {
	b, s, _ := newTestBackend(t)
	got := mustOK(t, b, s, logical.ReadOperation, "tidy/config", nil).Data
	if got["enabled"] != true || got["interval"] != int64(3600) || got["grace"] != int64(60) {
		t.Errorf("defaults = %v", got)
	}
	mustOK(t, b, s, logical.UpdateOperation, "tidy/config", map[string]interface{}{"enabled": false, "interval": "10m", "grace": "5m"})
	got = mustOK(t, b, s, logical.ReadOperation, "tidy/config", nil).Data
	if got["enabled"] != false || got["interval"] != int64(600) || got["grace"] != int64(300) {
		t.Errorf("after update = %v", got)
	}
	for _, bad := range []map[string]interface{}{{"interval": "30s"}, {"grace": "-1s"}, {"enabeld": true}} {
		mustBadRequest(t, b, s, logical.UpdateOperation, "tidy/config", bad, "")
	}
	if again := mustOK(t, b, s, logical.ReadOperation, "tidy/config", nil).Data; again["interval"] != int64(600) {
		t.Errorf("a refused write changed the config: %v", again)
	}
}

// The periodic function tidies when due, only where writes are allowed.
func TestPeriodicTidy(t *testing.T) {
	cases := []struct {
		name     string
		state    consts.ReplicationState
		disabled bool
		want     int // expired Secrets deleted
	}{
		{name: "active node", want: 1},
		{name: "performance standby", state: consts.ReplicationPerformanceStandby},
		{name: "performance secondary", state: consts.ReplicationPerformanceSecondary},
		{name: "disabled", disabled: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			b.System().(*logical.StaticSystemView).ReplicationStateVal = tc.state
			if tc.disabled {
				mustOK(t, b, s, logical.UpdateOperation, "tidy/config", map[string]interface{}{"enabled": false})
			}
			tidyFixture(t, b, s, fk)
			before := len(leftOf(t, fk, kindSecret))
			if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
				t.Fatal(err)
			}
			if deleted := before - len(leftOf(t, fk, kindSecret)); deleted != tc.want {
				t.Errorf("deleted %d Secrets, want %d", deleted, tc.want)
			}
		})
	}

	t.Run("not again within the interval", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
			t.Fatal(err)
		}
		tidyFixture(t, b, s, fk)
		if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
			t.Fatal(err)
		}
		if got := leftOf(t, fk, kindSecret); !slices.Contains(got, "tidy-expired") {
			t.Errorf("tidy ran again within its interval: %v", got)
		}
	})
}

// An unreachable cluster costs tidy one failed call, not one per kind.
func TestTidyStopsAtAnUnreachableCluster(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	calls := 0
	fk.clientset.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		return true, nil, errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	})
	resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
	if calls != 1 || len(resp.Data["errors"].([]string)) != 1 {
		t.Errorf("%d lists, errors %v; want one of each", calls, resp.Data["errors"])
	}
}
