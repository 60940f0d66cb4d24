package backend

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
)

// runRollback runs the rollback manager's pass over every WAL entry, as
// Vault does, and reports whether it succeeded. The SDK reports a failed
// rollback as an error response with a nil error.
func runRollback(t *testing.T, b *backend, s logical.Storage) bool {
	t.Helper()
	resp, err := b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RollbackOperation, Storage: s,
		Data: map[string]interface{}{"immediate": true},
	})
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	return resp == nil || !resp.IsError()
}

func rollbackNow(t *testing.T, b *backend, s logical.Storage) {
	t.Helper()
	if !runRollback(t, b, s) {
		t.Fatal("rollback reported a failure")
	}
}

// walEntries lists the stored WAL entries, failing the test on error.
func walEntries(t *testing.T, s logical.Storage) []string {
	t.Helper()
	ids, err := framework.ListWAL(context.Background(), s)
	if err != nil {
		t.Fatalf("listing WAL entries: %v", err)
	}
	return ids
}

// A plugin that dies between creating the Secret and returning the lease
// leaves a WAL entry and a Secret; rollback must delete the Secret.
func TestWALRollbackDeletesOrphanedSecret(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.setTokenErr(apierrors.NewInternalError(errors.New("etcd timeout")))
	failDeletes := true
	fk.clientset.PrependReactor("delete", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failDeletes {
			return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
		}
		return false, nil, nil
	})
	if _, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil); err == nil {
		t.Fatal("issue succeeded despite the TokenRequest failure")
	}
	if n := len(fk.managedSecrets(t)); n != 1 {
		t.Fatalf("setup: want the undeletable Secret left, got %d", n)
	}
	if wals := walEntries(t, s); len(wals) != 1 {
		t.Fatalf("want the WAL entry kept for rollback, got %d", len(wals))
	}

	if runRollback(t, b, s) {
		t.Fatal("rollback reported success while the API server refuses deletes")
	}
	if wals := walEntries(t, s); len(wals) != 1 {
		t.Fatalf("a failed rollback dropped its entry: %d left", len(wals))
	}
	failDeletes = false
	rollbackNow(t, b, s)
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets left after rollback: %v", names(left))
	}
	if wals := walEntries(t, s); len(wals) != 0 {
		t.Errorf("WAL entries left after rollback: %d", len(wals))
	}
}

const testIssueID = "issue-under-test"

func TestWALRollbackCases(t *testing.T) {
	cases := []struct {
		name string
		// secret to create before rollback; nil: none exists
		secret func() *corev1.Secret
		// tamper changes the Secret after the backend marked it, as a
		// namespace user may
		tamper func(*corev1.Secret)
		// ref makes the WAL entry's object from the created Secret (nil if none)
		ref         func(created *corev1.Secret) objectRef
		wantDeleted bool
	}{
		{
			name:        "created by the issue, UID recorded",
			secret:      func() *corev1.Secret { return boundSecret("vault-scanner-uid", testLeaseMeta(testIssueID)) },
			ref:         func(c *corev1.Secret) objectRef { return refOf(kindSecret, c) },
			wantDeleted: true,
		},
		{
			name:   "replaced since: recorded UID differs",
			secret: func() *corev1.Secret { return boundSecret("vault-scanner-replaced", testLeaseMeta(testIssueID)) },
			ref: func(c *corev1.Secret) objectRef {
				r := refOf(kindSecret, c)
				r.UID = "the-old-uid"
				return r
			},
		},
		{
			name:        "create outcome unknown, object carries the issue ID",
			secret:      func() *corev1.Secret { return boundSecret("vault-scanner-unknown", testLeaseMeta(testIssueID)) },
			ref:         nameOnly,
			wantDeleted: true,
		},
		{
			name:   "create outcome unknown, the issue ID copied onto an object without the mark",
			secret: func() *corev1.Secret { return boundSecret("vault-scanner-copied", testLeaseMeta(testIssueID)) },
			tamper: func(c *corev1.Secret) { delete(c.Annotations, ownerMarkAnnotation) },
			ref:    nameOnly,
		},
		{
			name:   "create outcome unknown, the issue ID but expires-at edited since",
			secret: func() *corev1.Secret { return boundSecret("vault-scanner-edited", testLeaseMeta(testIssueID)) },
			tamper: func(c *corev1.Secret) { c.Annotations[expiresAtAnnotation] = "2000-01-01T00:00:00Z" },
			ref:    nameOnly,
		},
		{
			name:   "name collision: the plugin's label, another issue's ID",
			secret: func() *corev1.Secret { return boundSecret("vault-scanner-other", testLeaseMeta("another-issue")) },
			ref:    nameOnly,
		},
		{
			name: "name collision: a foreign object",
			secret: func() *corev1.Secret {
				return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cluster-admin", Namespace: testNamespace}}
			},
			ref: nameOnly,
		},
		{
			name: "never created",
			ref: func(*corev1.Secret) objectRef {
				return objectRef{Kind: kindSecret, Namespace: testNamespace, Name: "vault-scanner-never"}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			secrets := fk.clientset.CoreV1().Secrets(testNamespace)
			var created *corev1.Secret
			if tc.secret != nil {
				secret := tc.secret()
				if err := b.markOwned(context.Background(), s, kindSecret, secret); err != nil {
					t.Fatal(err)
				}
				if tc.tamper != nil {
					tc.tamper(secret)
				}
				var err error
				if created, err = secrets.Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			putTestWAL(t, b, s, tc.ref(created))
			rollbackNow(t, b, s)

			if created != nil {
				_, err := secrets.Get(context.Background(), created.Name, metav1.GetOptions{})
				if exists := err == nil; exists == tc.wantDeleted {
					t.Errorf("Secret exists = %v, want deleted = %v", exists, tc.wantDeleted)
				}
			}
			if wals := walEntries(t, s); len(wals) != 0 {
				t.Errorf("WAL entry kept: %d", len(wals))
			}
		})
	}
}

func nameOnly(c *corev1.Secret) objectRef {
	return objectRef{Kind: kindSecret, Namespace: c.Namespace, Name: c.Name}
}

// putTestWAL stores an entry for testCluster's current endpoint.
func putTestWAL(t *testing.T, b *backend, s logical.Storage, refs ...objectRef) {
	t.Helper()
	client, err := b.client(context.Background(), s, testCluster)
	if err != nil {
		t.Fatal(err)
	}
	entry := &walEntry{Cluster: testCluster, Endpoint: client.endpoint.ID, IssueID: testIssueID, CreatedAt: time.Now(), Objects: refs}
	if _, err := framework.PutWAL(context.Background(), s, walObjectsKind, entry); err != nil {
		t.Fatal(err)
	}
}

// Every delete rollback sends carries the UID precondition.
func TestWALRollbackDeletesOnlyByUID(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	planned := boundSecret("vault-scanner-pre", testLeaseMeta(testIssueID))
	if err := b.markOwned(context.Background(), s, kindSecret, planned); err != nil {
		t.Fatal(err)
	}
	secret, err := fk.clientset.CoreV1().Secrets(testNamespace).Create(context.Background(), planned, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var preconditions []*metav1.Preconditions
	fk.clientset.PrependReactor("delete", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		preconditions = append(preconditions, action.(k8stesting.DeleteActionImpl).DeleteOptions.Preconditions)
		return false, nil, nil
	})
	putTestWAL(t, b, s, nameOnly(secret))
	rollbackNow(t, b, s)
	if len(preconditions) != 1 || preconditions[0] == nil || preconditions[0].UID == nil || *preconditions[0].UID != secret.UID {
		t.Fatalf("deletes sent with preconditions %v, want one with UID %s", preconditions, secret.UID)
	}
}

func TestWALRollbackKeepsEntryWhileAPIFails(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.clientset.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
	})
	putTestWAL(t, b, s, objectRef{Kind: kindSecret, Namespace: testNamespace, Name: "vault-scanner-later"})
	if runRollback(t, b, s) {
		t.Error("rollback reported success while the API server fails")
	}
	if wals := walEntries(t, s); len(wals) != 1 {
		t.Errorf("WAL entries = %d, want the entry kept for the next rollback", len(wals))
	}
}

// Without get, an object known only by name cannot be proven the issue's:
// it is never deleted by name; the entry stays (tidy is the backstop).
func TestWALRollbackWithoutGetNeverDeletesByName(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	secret, err := fk.clientset.CoreV1().Secrets(testNamespace).Create(context.Background(), boundSecret("vault-scanner-noget", testLeaseMeta(testIssueID)), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fk.clientset.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "vault-scanner-noget", errors.New("RBAC: get not granted"))
	})
	putTestWAL(t, b, s, nameOnly(secret))
	if runRollback(t, b, s) {
		t.Error("rollback reported success without being able to check the object")
	}
	if len(fk.managedSecrets(t)) != 1 {
		t.Error("rollback deleted an object it could not prove was its own")
	}
	if wals := walEntries(t, s); len(wals) != 1 {
		t.Errorf("WAL entries = %d, want the entry kept", len(wals))
	}
}

// The issue flow records the bound Secret's UID before the token, so even
// without get (the shipped RBAC) rollback deletes it.
func TestWALRollbackWithoutGetDeletesRecordedSecret(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.setTokenErr(apierrors.NewInternalError(errors.New("etcd timeout")))
	fk.clientset.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("RBAC: get not granted"))
	})
	failDeletes := true
	fk.clientset.PrependReactor("delete", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failDeletes {
			return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
		}
		return false, nil, nil
	})
	_, _ = request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if n := len(fk.managedSecrets(t)); n != 1 {
		t.Fatalf("setup: want the undeletable Secret left, got %d", n)
	}
	failDeletes = false
	rollbackNow(t, b, s)
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets left after rollback: %v", names(left))
	}
}

// An entry whose endpoint is unknown (its cluster deleted and the retired
// endpoint gone) is kept, never dropped as if done, until the give-up age.
func TestWALRollbackUnknownEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		age      time.Duration
		wantKept bool
	}{
		{name: "young entry kept", age: time.Minute, wantKept: true},
		{name: "entry past the give-up age dropped", age: walGiveUpAge + time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			entry := &walEntry{Cluster: "gone", Endpoint: "nowhere", IssueID: testIssueID, CreatedAt: time.Now().Add(-tc.age),
				Objects: []objectRef{{Kind: kindSecret, Namespace: testNamespace, Name: "vault-scanner-gone", UID: types.UID("u")}}}
			if _, err := framework.PutWAL(context.Background(), s, walObjectsKind, entry); err != nil {
				t.Fatal(err)
			}
			ok := runRollback(t, b, s)
			if kept := len(walEntries(t, s)) == 1; kept != tc.wantKept || ok == tc.wantKept {
				t.Errorf("kept = %v (rollback ok = %v), want kept = %v", kept, ok, tc.wantKept)
			}
		})
	}
}
