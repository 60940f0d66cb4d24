package backend

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

// clusterBindingBackend has role "eph" binding the ClusterRole view,
// cluster-wide on request.
func clusterBindingBackend(t *testing.T) (*backend, logical.Storage, *fakeKube) {
	return ephemeralBackend(t, map[string]interface{}{
		"kubernetes_role_name": "view", "kubernetes_role_type": "ClusterRole",
		"allowed_kubernetes_namespaces": "team-a", "allow_cluster_role_binding": true,
	})
}

// A create that was stored but answered with a timeout leaves an object the
// plugin holds no UID for: cleanup finds it by the issue's ID and deletes
// it; if it cannot look, a WAL entry stays so rollback does later.
func TestUncertainCreateIsCleanedUp(t *testing.T) {
	for _, tc := range []struct {
		name      string
		getFails  bool
		wantWAL   int
		wantAfter map[string]int // objects after the issue (before rollback)
	}{
		{name: "found by the issue ID at once", wantAfter: map[string]int{}},
		{name: "lookup fails: left to rollback", getFails: true, wantWAL: 1, wantAfter: map[string]int{kindClusterRoleBinding: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := clusterBindingBackend(t)
			// The binding is stored, then the answer is lost.
			fk.clientset.PrependReactor("create", "clusterrolebindings", func(action k8stesting.Action) (bool, runtime.Object, error) {
				obj := action.(k8stesting.CreateAction).GetObject()
				obj.(metav1.Object).SetUID("stored-uid")
				if err := fk.clientset.Tracker().Create(action.GetResource(), obj, ""); err != nil {
					return true, nil, err
				}
				return true, nil, apierrors.NewServerTimeout(schema.GroupResource{Resource: "clusterrolebindings"}, "create", 1)
			})
			getFails := tc.getFails
			fk.clientset.PrependReactor("get", "clusterrolebindings", func(k8stesting.Action) (bool, runtime.Object, error) {
				if getFails {
					return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
				}
				return false, nil, nil
			})
			resp, err := request(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"cluster_role_binding": true})
			if status, _ := statusOf(resp, err); status != 504 {
				t.Fatalf("status %d (%v), want 504", status, err)
			}
			if got := leaseKubeObjects(t, fk); !equalCounts(got, tc.wantAfter) {
				t.Fatalf("objects after the issue: %v, want %v", got, tc.wantAfter)
			}
			if wals := walEntries(t, s); len(wals) != tc.wantWAL {
				t.Fatalf("WAL entries: %d, want %d", len(wals), tc.wantWAL)
			}
			getFails = false
			rollbackNow(t, b, s)
			if got := leaseKubeObjects(t, fk); len(got) != 0 {
				t.Errorf("objects after rollback: %v", got)
			}
		})
	}
}

// A name that exists already is a 400 (name collision), and the foreign
// object is never deleted, now or by rollback.
func TestNameCollisionSparesTheForeignObject(t *testing.T) {
	b, s, fk := clusterBindingBackend(t)
	var foreign string
	fk.clientset.PrependReactor("create", "clusterrolebindings", func(action k8stesting.Action) (bool, runtime.Object, error) {
		// Someone else owns a binding of exactly this name.
		obj := action.(k8stesting.CreateAction).GetObject().(metav1.Object)
		foreign = obj.GetName()
		obj.SetLabels(nil)
		obj.SetAnnotations(nil)
		obj.SetUID("foreign-uid")
		if err := fk.clientset.Tracker().Create(action.GetResource(), obj.(runtime.Object), ""); err != nil {
			return true, nil, err
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "clusterrolebindings"}, foreign)
	})
	resp, err := request(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"cluster_role_binding": true})
	if status, msg := statusOf(resp, err); status != 400 || !strings.Contains(msg, "already exists") {
		t.Fatalf("status %d %q, want a 400 naming the collision", status, msg)
	}
	rollbackNow(t, b, s)
	if _, err := fk.clientset.RbacV1().ClusterRoleBindings().Get(context.Background(), foreign, metav1.GetOptions{}); err != nil {
		t.Fatalf("the foreign binding was deleted: %v", err)
	}
	if got := leaseKubeObjects(t, fk); len(got) != 0 {
		t.Errorf("the plugin's own objects left: %v", got)
	}
}

// Revoke deletes the object that kills the token first, then the rest,
// and goes on past a failure, which it reports so Vault retries.
func TestRevokeKillsTheTokenFirst(t *testing.T) {
	b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"})
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/eph", nil)
	var mu sync.Mutex
	var order []string
	roleDeleteFails := true
	fk.clientset.PrependReactor("delete", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, action.GetResource().Resource)
		if action.GetResource().Resource == "roles" && roleDeleteFails {
			return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
		}
		return false, nil, nil
	})
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err == nil {
		t.Fatal("revoke reported success while a delete failed")
	}
	if want := []string{"serviceaccounts", "rolebindings", "roles"}; !slices.Equal(order, want) {
		t.Fatalf("delete order %v, want %v", order, want)
	}
	if got := leaseKubeObjects(t, fk); !equalCounts(got, map[string]int{kindRole: 1}) {
		t.Fatalf("after the failed revoke: %v, want only the Role left", got)
	}
	roleDeleteFails = false
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
		t.Fatalf("retried revoke: %v", err)
	}
	if got := leaseKubeObjects(t, fk); len(got) != 0 {
		t.Errorf("objects left: %v", got)
	}
}

// Before anything is created the plugin checks it may delete every kind of
// the lease, in its namespace, not only the first.
func TestIssueChecksEveryKindIsRevocable(t *testing.T) {
	for _, resource := range []string{"serviceaccounts", "roles", "rolebindings"} {
		t.Run(resource, func(t *testing.T) {
			b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"})
			denyAccessReview(fk, "delete", resource)
			resp, err := request(t, b, s, logical.ReadOperation, "creds/eph", nil)
			if status, msg := statusOf(resp, err); status != 502 || !strings.Contains(msg, "delete "+resource) {
				t.Fatalf("status %d %q, want a 502 naming delete %s", status, msg, resource)
			}
			if got := leaseKubeObjects(t, fk); len(got) != 0 {
				t.Errorf("objects created for a lease that could not be revoked: %v", got)
			}
			if wals := walEntries(t, s); len(wals) != 0 {
				t.Errorf("WAL entries left: %d", len(wals))
			}
		})
	}
	t.Run("cluster-scoped binding", func(t *testing.T) {
		b, s, fk := clusterBindingBackend(t)
		var asked []authorizationv1.ResourceAttributes
		fk.clientset.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
			review := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
			asked = append(asked, *review.Spec.ResourceAttributes)
			review.Status.Allowed = review.Spec.ResourceAttributes.Resource != "clusterrolebindings"
			return true, review, nil
		})
		resp, err := request(t, b, s, logical.ReadOperation, "creds/eph", map[string]interface{}{"cluster_role_binding": true})
		if status, _ := statusOf(resp, err); status != 502 {
			t.Fatalf("status %d, want 502", status)
		}
		if !slices.ContainsFunc(asked, func(a authorizationv1.ResourceAttributes) bool {
			return a.Verb == "delete" && a.Resource == "clusterrolebindings" && a.Group == "rbac.authorization.k8s.io" && a.Namespace == ""
		}) {
			t.Errorf("asked %v; want delete clusterrolebindings cluster-wide in rbac.authorization.k8s.io", asked)
		}
	})
}

// No response the plugin gives, successful or not, carries its own
// credential.
func TestNoResponseCarriesThePluginCredential(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	check := func(what string, resp *logical.Response, err error) {
		t.Helper()
		text := fmt.Sprintf("%v %v", resp, err)
		if resp != nil {
			text += fmt.Sprintf(" %#v %#v %v", resp.Data, resp.Secret, resp.Warnings)
		}
		if strings.Contains(text, testRequesterJWT) || strings.Contains(text, strings.Split(testRequesterJWT, ".")[1]) {
			t.Errorf("%s carries the plugin's credential", what)
		}
	}
	for _, path := range []string{"creds/" + testRole, "clusters/" + testCluster, "clusters/" + testCluster + "/check", "roles/" + testRole, "tidy/config"} {
		resp, err := request(t, b, s, logical.ReadOperation, path, nil)
		check(path, resp, err)
	}
	resp, err := request(t, b, s, logical.UpdateOperation, "tidy", nil)
	check("tidy", resp, err)
	fk.setTokenErr(apierrors.NewUnauthorized("Unauthorized"))
	resp, err = request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	check("failed creds", resp, err)
}

// walStorage can hold WAL writes until released, or fail them.
type walStorage struct {
	logical.Storage
	started chan struct{} // receives once per WAL put that began, when set
	release chan struct{} // WAL puts wait for it when set
	fail    bool
}

func (s *walStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if strings.HasPrefix(e.Key, framework.WALPrefix) {
		if s.fail {
			return errors.New("storage unavailable")
		}
		if s.started != nil {
			s.started <- struct{}{}
		}
		if s.release != nil {
			select {
			case <-s.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return s.Storage.Put(ctx, e)
}

// The WAL entry is stored before anything that can grant access exists:
// the test holds the WAL write and watches what the issue does meanwhile.
// For a role's existing service account the Secret comes first (the entry
// records its UID), the token only after the entry; for an ephemeral role
// nothing is created before the entry.
func TestWALStoredBeforeTokenRequest(t *testing.T) {
	cases := []struct {
		name string
		open func(t *testing.T) (*backend, logical.Storage, *fakeKube, string)
		// objectsBeforeWAL are the objects that may exist while the WAL
		// write is held.
		objectsBeforeWAL map[string]int
	}{
		{
			name: "existing service account",
			open: func(t *testing.T) (*backend, logical.Storage, *fakeKube, string) {
				b, s, fk := newConfiguredBackend(t)
				return b, s, fk, "creds/" + testRole
			},
			objectsBeforeWAL: map[string]int{kindSecret: 1},
		},
		{
			name: "ephemeral role",
			open: func(t *testing.T) (*backend, logical.Storage, *fakeKube, string) {
				b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"})
				return b, s, fk, "creds/eph"
			},
			objectsBeforeWAL: map[string]int{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, inner, fk, path := tc.open(t)
			s := &walStorage{Storage: inner, started: make(chan struct{}, 4), release: make(chan struct{})}
			done := make(chan error, 1)
			go func() {
				resp, err := request(t, b, s, logical.ReadOperation, path, nil)
				if err == nil && resp.IsError() {
					err = resp.Error()
				}
				done <- err
			}()
			select {
			case <-s.started:
			case err := <-done:
				t.Fatalf("the issue ended without writing a WAL entry: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("no WAL write began")
			}
			// While the entry is held, nothing more may happen: give a
			// racing TokenRequest every chance to show up.
			for range 20 {
				if n := len(fk.tokenRequests()); n != 0 {
					t.Fatalf("%d TokenRequests while the WAL entry was not yet stored", n)
				}
				if got := leaseKubeObjects(t, fk); !equalCounts(got, tc.objectsBeforeWAL) {
					t.Fatalf("objects while the WAL entry was not yet stored: %v, want %v", got, tc.objectsBeforeWAL)
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(s.release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n := len(fk.tokenRequests()); n != 1 {
				t.Errorf("TokenRequests after the release: %d, want 1", n)
			}
			if wals := walEntries(t, inner); len(wals) != 0 {
				t.Errorf("WAL entries left after the issue: %d", len(wals))
			}
		})
	}
}

// The entry written for a role's existing service account names the
// bound Secret with its UID, so rollback never needs to delete by name.
func TestWALEntryHoldsTheSecretUID(t *testing.T) {
	b, inner, fk := newConfiguredBackend(t)
	fk.setTokenErr(errTokenRequestFailed)
	failSecretDeletes(fk)
	_, _ = request(t, b, inner, logical.ReadOperation, "creds/"+testRole, nil)
	ids := walEntries(t, inner)
	if len(ids) != 1 {
		t.Fatalf("WAL entries: %d, want 1", len(ids))
	}
	raw, err := framework.GetWAL(context.Background(), inner, ids[0])
	if err != nil || raw == nil {
		t.Fatal(err)
	}
	secrets := fk.managedSecrets(t)
	objs, _ := raw.Data.(map[string]interface{})["objects"].([]interface{})
	if len(secrets) != 1 || len(objs) != 1 || objs[0].(map[string]interface{})["uid"] != string(secrets[0].UID) {
		t.Fatalf("WAL objects %v, Secrets %v: want the Secret with its UID", objs, names(secrets))
	}
}

// A WAL write that fails ends the issue before any token exists and
// deletes the Secret created before it.
func TestWALWriteFailureLeavesNothing(t *testing.T) {
	b, inner, fk := newConfiguredBackend(t)
	s := &walStorage{Storage: inner, fail: true}
	_, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if err == nil || !strings.Contains(err.Error(), "writing WAL entry") {
		t.Fatalf("error = %v, want a WAL write failure", err)
	}
	if n := len(fk.tokenRequests()); n != 0 {
		t.Errorf("%d TokenRequests made without a WAL entry", n)
	}
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets left: %v", names(left))
	}
	if wals := walEntries(t, inner); len(wals) != 0 {
		t.Errorf("WAL entries left: %d", len(wals))
	}
}
