package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
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

// createSecret stores secret in the fake, marked by b first unless b is nil,
// as a namespace user (nil) or the plugin would.
func createSecret(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret) {
	t.Helper()
	if b != nil {
		if err := b.markOwned(context.Background(), s, kindSecret, secret); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fk.clientset.CoreV1().Secrets(secret.Namespace).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// expiredSecret is a Secret labelled and annotated as the plugin's lease
// Secrets are, expired an hour ago.
func expiredSecret(name string) *corev1.Secret {
	lm := testLeaseMeta("issue-" + name)
	lm.expiresAt = time.Now().Add(-time.Hour)
	return boundSecret(name, lm)
}

func secretExists(t *testing.T, fk *fakeKube, ns, name string) bool {
	t.Helper()
	_, err := fk.clientset.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// Labels and annotations anyone may write prove nothing: tidy deletes only
// what carries the mount's mark over what it decides by, and reports the
// rest. An expiry it cannot read is never guessed.
func TestTidyDeletesOnlyWhatTheMarkProves(t *testing.T) {
	cases := []struct {
		name string
		// make puts the Secret into the fake
		make           func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret)
		wantDeleted    bool
		wantUnverified bool
	}{
		{
			name: "the plugin's, expired",
			make: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret) {
				createSecret(t, b, s, fk, secret)
			},
			wantDeleted: true,
		},
		{
			name: "a namespace user's, labelled and annotated like the plugin's",
			make: func(t *testing.T, _ *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret) {
				createSecret(t, nil, s, fk, secret)
			},
			wantUnverified: true,
		},
		{
			name: "a namespace user's, with a mark copied from one of the plugin's",
			make: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret) {
				original := expiredSecret("vault-scanner-original")
				createSecret(t, b, s, fk, original)
				secret.Annotations = maps.Clone(original.Annotations)
				createSecret(t, nil, s, fk, secret)
			},
			// The original is tidied; the copy is reported.
			wantUnverified: true,
		},
		{
			name: "the plugin's, expires-at missing",
			make: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret) {
				delete(secret.Annotations, expiresAtAnnotation)
				createSecret(t, b, s, fk, secret)
			},
		},
		{
			name: "the plugin's, expires-at unparsable",
			make: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret) {
				secret.Annotations[expiresAtAnnotation] = "yesterday"
				createSecret(t, b, s, fk, secret)
			},
		},
		{
			name: "the plugin's, expires-at not RFC 3339",
			make: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube, secret *corev1.Secret) {
				secret.Annotations[expiresAtAnnotation] = time.Now().Add(-time.Hour).Format(time.RFC1123)
				createSecret(t, b, s, fk, secret)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			secret := expiredSecret("db-credentials")
			tc.make(t, b, s, fk, secret)
			resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
			if exists := secretExists(t, fk, testNamespace, secret.Name); exists == tc.wantDeleted {
				t.Errorf("Secret exists = %v, want deleted = %v", exists, tc.wantDeleted)
			}
			unverified := resp.Data["unverified"].([]string)
			if reported := slices.Contains(unverified, "Secret "+testNamespace+"/"+secret.Name); reported != tc.wantUnverified {
				t.Errorf("reported as unverified = %v, want %v (unverified: %v)", reported, tc.wantUnverified, unverified)
			}
			if !tc.wantUnverified && len(unverified) != 0 {
				t.Errorf("unverified = %v, want none", unverified)
			}
		})
	}
}

// Back-dating a live lease's expires-at does not end it early: its Secret
// survives tidy (reported), and revoking the lease still deletes it.
func TestTidyLeavesBackdatedLeaseSecret(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	issued := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	bound := leaseObjects(t, issued)[0]
	secrets := fk.clientset.CoreV1().Secrets(bound.Namespace)
	secret, err := secrets.Get(context.Background(), bound.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// An immutable Secret's metadata stays editable.
	secret.Annotations[expiresAtAnnotation] = time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339)
	if _, err := secrets.Update(context.Background(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
	if !secretExists(t, fk, bound.Namespace, bound.Name) {
		t.Fatal("tidy deleted a live lease's Secret whose expires-at was back-dated")
	}
	if got := resp.Data["unverified"].([]string); !slices.Equal(got, []string{bound.String()}) {
		t.Errorf("unverified = %v, want the edited Secret", got)
	}
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, issued)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if secretExists(t, fk, bound.Namespace, bound.Name) {
		t.Error("revoke left the lease's Secret")
	}
}

// Two mounts that both name a cluster cluster-a, on one API server, never
// tidy each other's objects: each has its own key.
func TestTidyTwoMountsSameClusterName(t *testing.T) {
	b1, s1, fk := newConfiguredBackend(t)
	b2, s2, _ := newConfiguredBackend(t)
	b2.newKubeAPI = func(*rest.Config) (kubeAPI, error) { return fk.api(), nil }
	b2.resetClients()

	createSecret(t, b1, s1, fk, expiredSecret("vault-scanner-mount-1"))
	createSecret(t, b2, s2, fk, expiredSecret("vault-scanner-mount-2"))

	resp := mustOK(t, b1, s1, logical.UpdateOperation, "tidy", nil)
	if resp.Data["deleted"] != 1 || secretExists(t, fk, testNamespace, "vault-scanner-mount-1") {
		t.Errorf("mount 1 deleted %v; want its own Secret", resp.Data["deleted"])
	}
	if !secretExists(t, fk, testNamespace, "vault-scanner-mount-2") {
		t.Fatal("mount 1 deleted mount 2's Secret")
	}
	if got := resp.Data["unverified"].([]string); !slices.Equal(got, []string{"Secret " + testNamespace + "/vault-scanner-mount-2"}) {
		t.Errorf("mount 1 unverified = %v, want mount 2's Secret", got)
	}
	resp = mustOK(t, b2, s2, logical.UpdateOperation, "tidy", nil)
	if resp.Data["deleted"] != 1 || secretExists(t, fk, testNamespace, "vault-scanner-mount-2") {
		t.Errorf("mount 2 deleted %v; want its own Secret", resp.Data["deleted"])
	}
}

// countLists counts the list requests for resource, and records their
// options.
func countLists(fk *fakeKube, resource string) func() []metav1.ListOptions {
	var mu sync.Mutex
	var lists []metav1.ListOptions
	fk.clientset.PrependReactor("list", resource, func(action k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		lists = append(lists, action.(k8stesting.ListActionImpl).ListOptions)
		return false, nil, nil
	})
	return func() []metav1.ListOptions {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lists)
	}
}

// Tidy lists metadata page by page and deletes across pages.
func TestTidyPages(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	const expired = 2*tidyPageSize + tidyPageSize/2
	for i := range expired {
		createSecret(t, b, s, fk, expiredSecret(fmt.Sprintf("vault-scanner-%04d", i)))
	}
	lm := testLeaseMeta("live")
	lm.expiresAt = time.Now().Add(time.Hour)
	createSecret(t, b, s, fk, boundSecret("vault-scanner-live", lm))
	lists := countLists(fk, "secrets")

	resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
	pages := lists()
	if resp.Data["deleted"] != expired {
		t.Errorf("deleted %v, want %d", resp.Data["deleted"], expired)
	}
	if got := names(fk.managedSecrets(t)); !slices.Equal(got, []string{"vault-scanner-live"}) {
		t.Errorf("left: %v", got)
	}
	if len(pages) != 3 {
		t.Errorf("%d list requests for Secrets, want 3 pages", len(pages))
	}
	for i, opts := range pages {
		if opts.Limit != tidyPageSize || (i == 0) != (opts.Continue == "") {
			t.Errorf("page %d: limit %d, continue %q", i, opts.Limit, opts.Continue)
		}
	}
}

// endlessKube answers every list with one live object and a next page, as
// a server (or a namespace) with more objects than tidy may look at.
type endlessKube struct {
	kubeAPI
	mu    sync.Mutex
	lists map[string]int // by "kind namespace"
}

func (e *endlessKube) ListManaged(_ context.Context, kind, ns string, limit int64, continueToken string) (*metav1.PartialObjectMetadataList, error) {
	e.mu.Lock()
	e.lists[kind+" "+ns]++
	e.mu.Unlock()
	item := metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: ns, Labels: map[string]string{managedByLabel: managedByValue}}}
	return &metav1.PartialObjectMetadataList{ListMeta: metav1.ListMeta{Continue: continueToken + "x"}, Items: []metav1.PartialObjectMetadata{item}}, nil
}

// Every loop whose length others choose is bounded: pages per list,
// namespaces per cluster, and entries in the response.
func TestTidyBounds(t *testing.T) {
	t.Run("pages per list", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		endless := &endlessKube{kubeAPI: fk.api(), lists: map[string]int{}}
		b.newKubeAPI = func(*rest.Config) (kubeAPI, error) { return endless, nil }
		b.resetClients()
		resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
		if len(endless.lists) != len(kindsInDeleteOrder) {
			t.Errorf("listed %v", endless.lists)
		}
		for where, n := range endless.lists {
			if n != maxTidyPagesPerList {
				t.Errorf("%s: %d pages, want %d", where, n, maxTidyPagesPerList)
			}
		}
		skipped := resp.Data["skipped"].([]string)
		if len(skipped) != len(kindsInDeleteOrder) || !strings.Contains(skipped[0], "looked at the first 100000 only") {
			t.Errorf("skipped = %v", skipped)
		}
		// Each of those objects was reported, but only the first
		// maxTidyReportEntries by name.
		if got := resp.Data["unverified"].([]string); len(got) != maxTidyReportEntries {
			t.Errorf("%d unverified entries, want %d", len(got), maxTidyReportEntries)
		}
		if got := resp.Data["unverified_total"]; got != len(kindsInDeleteOrder)*maxTidyPagesPerList {
			t.Errorf("unverified_total = %v", got)
		}
	})

	t.Run("namespaces per cluster", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		const roles = maxTidyNamespacesPerCluster + 44
		for i := range roles {
			mustOK(t, b, s, logical.CreateOperation, fmt.Sprintf("roles/r%03d", i), map[string]interface{}{
				"cluster": testCluster, "service_account_name": testSA, "service_account_namespace": fmt.Sprintf("ns-%03d", i),
			})
		}
		all := roles + 1 // and testNamespace, of testRole
		visited := map[string]int{}
		for run := range 2 {
			lists := countLists(fk, "secrets")
			resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
			pages := lists()
			if len(pages) != maxTidyNamespacesPerCluster {
				t.Errorf("run %d listed Secrets in %d namespaces, want %d", run, len(pages), maxTidyNamespacesPerCluster)
			}
			skipped := resp.Data["skipped"].([]string)
			want := fmt.Sprintf("%d of its %d namespaces were not visited", all-maxTidyNamespacesPerCluster, all)
			if len(skipped) != 1 || !strings.Contains(skipped[0], want) {
				t.Errorf("run %d skipped = %v, want %q", run, skipped, want)
			}
		}
		for _, action := range fk.clientset.Actions() {
			if list, ok := action.(k8stesting.ListActionImpl); ok && list.Resource.Resource == "secrets" {
				visited[list.Namespace]++
			}
		}
		if len(visited) != all {
			t.Errorf("two runs visited %d namespaces, want all %d", len(visited), all)
		}
	})

	t.Run("clusters per run", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		const extra = maxTidyClustersPerRun + 8
		for i := range extra {
			mustOK(t, b, s, logical.CreateOperation, fmt.Sprintf("clusters/c%03d", i), map[string]interface{}{
				"kubernetes_host": testHost, "kubernetes_ca_cert": testCAPEM(t), "service_account_jwt": testRequesterJWT,
			})
		}
		all := extra + 1 // and testCluster
		for run := range 2 {
			built := fk.built.Load()
			resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
			skipped := resp.Data["skipped"].([]string)
			want := fmt.Sprintf("%d of the %d clusters were not visited", all-maxTidyClustersPerRun, all)
			if len(skipped) != 1 || !strings.Contains(skipped[0], want) {
				t.Errorf("run %d skipped = %v, want %q", run, skipped, want)
			}
			// Each visited cluster needs its client: built once, on first use.
			if run == 0 && fk.built.Load()-built > maxTidyClustersPerRun {
				t.Errorf("run %d built %d clients, bound is %d", run, fk.built.Load()-built, maxTidyClustersPerRun)
			}
		}
		if got := int(fk.built.Load()); got < all {
			t.Errorf("two runs reached %d clusters, want all %d", got, all)
		}
	})

	t.Run("reported entries", func(t *testing.T) {
		b, s, fk := newConfiguredBackend(t)
		const forged = maxTidyReportEntries + 50
		for i := range forged {
			createSecret(t, nil, s, fk, expiredSecret(fmt.Sprintf("forged-%03d", i)))
		}
		resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
		if got := resp.Data["unverified"].([]string); len(got) != maxTidyReportEntries {
			t.Errorf("%d unverified entries, want %d", len(got), maxTidyReportEntries)
		}
		if got := resp.Data["unverified_total"]; got != forged {
			t.Errorf("unverified_total = %v, want %d", got, forged)
		}
		if got := len(fk.managedSecrets(t)); got != forged {
			t.Errorf("%d Secrets left, want all %d", got, forged)
		}
	})
}

// Rotation puts its Secrets in the namespace of the plugin's own service
// account, which no role may use: tidy visits it, for the current
// credential and for retired ones.
func TestTidyVisitsOwnServiceAccountNamespaces(t *testing.T) {
	b, s, fk := newTestBackend(t)
	const retiredNamespace = "scanner-before"
	jwtIn := func(ns string) string {
		return fakeJWT(map[string]interface{}{
			"exp":           time.Now().Add(time.Hour).Unix(),
			"kubernetes.io": map[string]interface{}{"namespace": ns, "serviceaccount": map[string]interface{}{"name": pluginSA, "uid": "u"}},
		})
	}
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, withFields(validClusterBody(t), map[string]interface{}{"service_account_jwt": jwtIn(retiredNamespace)}))
	// Re-pointed: the first endpoint, with its credential, is retired.
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, withFields(validClusterBody(t), map[string]interface{}{
		"kubernetes_host": otherHost, "service_account_jwt": jwtIn(pluginNamespace),
	}))
	configureRole(t, b, s, nil)
	if retired, err := listRetiredEndpoints(context.Background(), s, testCluster); err != nil || len(retired) != 1 {
		t.Fatalf("retired endpoints: %d, %v; the test needs one", len(retired), err)
	}
	for _, ns := range []string{pluginNamespace, retiredNamespace} {
		createSecret(t, b, s, fk, rotationSecret(testCluster, ns, time.Now().Add(-time.Hour), "rotation-"+ns))
	}
	resp := mustOK(t, b, s, logical.UpdateOperation, "tidy", nil)
	if resp.Data["deleted"] != 2 {
		t.Errorf("deleted %v, want both orphaned rotation Secrets", resp.Data["deleted"])
	}
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("left: %v", names(left))
	}
}

// BenchmarkTidy runs tidy over n Secrets labelled as the plugin's, half of
// them its own live ones, half forged (reported, never deleted), so every
// iteration does the same work.
func BenchmarkTidy(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			be, s, fk := newTestBackendLogging(b, hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Info, JSONFormat: true}), inMemory())
			lm := testLeaseMeta("bench")
			lm.expiresAt = time.Now().Add(time.Hour)
			for i := range n {
				secret := boundSecret(fmt.Sprintf("vault-scanner-%06d", i), lm)
				if i%2 == 0 {
					if err := be.markOwned(context.Background(), s, kindSecret, secret); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := fk.mem.put(kindSecret, secret); err != nil {
					b.Fatal(err)
				}
			}
			configureCluster(b, be, s)
			configureRole(b, be, s, nil)
			b.ReportAllocs()
			for b.Loop() {
				result, err := be.tidy(context.Background(), s, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				if result.unverified.total != n/2 {
					b.Fatalf("unverified %d, want %d", result.unverified.total, n/2)
				}
			}
		})
	}
}
