package backend

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

func rollbackNow(t *testing.T, b *backend, s logical.Storage) {
	t.Helper()
	_, err := b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RollbackOperation, Storage: s,
		Data: map[string]interface{}{"immediate": true},
	})
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
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
	if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 1 {
		t.Fatalf("want the WAL entry kept for rollback, got %d", len(wals))
	}

	failDeletes = false
	rollbackNow(t, b, s)
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets left after rollback: %v", names(left))
	}
	if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 0 {
		t.Errorf("WAL entries left after rollback: %d", len(wals))
	}
}

func TestWALRollbackCases(t *testing.T) {
	cases := []struct {
		name        string
		entry       walObjects
		secretLabel string // "" means no Secret exists
		wantDeleted bool
	}{
		{name: "orphaned plugin Secret", entry: secretWAL(testCluster, "vault-scanner-orphan"), secretLabel: managedByValue, wantDeleted: true},
		{name: "Secret never created", entry: secretWAL(testCluster, "vault-scanner-never")},
		{name: "foreign Secret with the name", entry: secretWAL(testCluster, "vault-scanner-foreign"), secretLabel: "someone-else"},
		{name: "cluster deleted since", entry: secretWAL("gone", "vault-scanner-gone"), secretLabel: managedByValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			secrets := fk.clientset.CoreV1().Secrets(testNamespace)
			if tc.secretLabel != "" {
				secret := boundSecret(tc.entry.Objects[0].Name, testRole, &roleEntry{Cluster: testCluster, ServiceAccountNamespace: testNamespace}, timeNow())
				secret.Labels[managedByLabel] = tc.secretLabel
				if _, err := secrets.Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := framework.PutWAL(context.Background(), s, walObjectsKind, &tc.entry); err != nil {
				t.Fatal(err)
			}
			rollbackNow(t, b, s)

			_, err := secrets.Get(context.Background(), tc.entry.Objects[0].Name, metav1.GetOptions{})
			exists := err == nil
			if tc.secretLabel != "" && exists == tc.wantDeleted {
				t.Errorf("Secret exists = %v, want deleted = %v", exists, tc.wantDeleted)
			}
			if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 0 {
				t.Errorf("WAL entry kept: %d", len(wals))
			}
		})
	}
}

func TestWALRollbackKeepsEntryWhileAPIFails(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.clientset.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
	})
	entry := secretWAL(testCluster, "vault-scanner-later")
	if _, err := framework.PutWAL(context.Background(), s, walObjectsKind, &entry); err != nil {
		t.Fatal(err)
	}
	_, _ = b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RollbackOperation, Storage: s, Data: map[string]interface{}{"immediate": true},
	})
	if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 1 {
		t.Errorf("WAL entries = %d, want the entry kept for the next rollback", len(wals))
	}
}

func secretWAL(cluster, name string) walObjects {
	return walObjects{Cluster: cluster, Objects: []objectRef{{Kind: kindSecret, Namespace: testNamespace, Name: name}}}
}

// With the shipped RBAC the plugin may not read Secrets; rollback still
// deletes what it created.
func TestWALRollbackWithoutGetPermission(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	secret := boundSecret("vault-scanner-noget", testRole, &roleEntry{Cluster: testCluster, ServiceAccountNamespace: testNamespace}, timeNow())
	if _, err := fk.clientset.CoreV1().Secrets(testNamespace).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fk.clientset.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "vault-scanner-noget", errors.New("RBAC: get not granted"))
	})
	entry := secretWAL(testCluster, "vault-scanner-noget")
	if _, err := framework.PutWAL(context.Background(), s, walObjectsKind, &entry); err != nil {
		t.Fatal(err)
	}
	rollbackNow(t, b, s)
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets left after rollback: %v", names(left))
	}
	if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 0 {
		t.Errorf("WAL entries left: %d", len(wals))
	}
}
