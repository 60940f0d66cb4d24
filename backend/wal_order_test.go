package backend

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

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
