package backend

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// walStorage can hold WAL writes until released, or fail them.
type walStorage struct {
	logical.Storage
	release chan struct{} // WAL puts wait for it when set
	fail    bool
}

func (s *walStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if strings.HasPrefix(e.Key, "wal/") {
		if s.fail {
			return errors.New("storage unavailable")
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

// walCountAt records how many WAL entries were stored when the API server
// saw a given call.
type walCountAt struct {
	mu     sync.Mutex
	counts map[string]int
}

func (w *walCountAt) reactor(s logical.Storage, call string, onCall func()) k8stesting.ReactionFunc {
	return func(k8stesting.Action) (bool, runtime.Object, error) {
		n := -1 // a listing error shows up as an impossible count
		if wals, err := framework.ListWAL(context.Background(), s); err == nil {
			n = len(wals)
		}
		w.mu.Lock()
		if _, seen := w.counts[call]; !seen {
			w.counts[call] = n
		}
		w.mu.Unlock()
		if onCall != nil {
			onCall()
		}
		return false, nil, nil
	}
}

// The token is never requested before the WAL entry is stored. For the
// existing service account the per-lease Secret is created while the entry
// is being written: the WAL put here waits until the API server has seen
// the Secret create, which only finishes if the two run side by side.
func TestWALStoredBeforeTokenRequest(t *testing.T) {
	t.Run("existing service account: Secret create alongside the WAL write", func(t *testing.T) {
		b, inner, fk := newConfiguredBackend(t)
		s := &walStorage{Storage: inner, release: make(chan struct{})}
		seen := &walCountAt{counts: map[string]int{}}
		var once sync.Once
		fk.clientset.PrependReactor("create", "secrets", seen.reactor(inner, "secret", func() { once.Do(func() { close(s.release) }) }))
		fk.clientset.PrependReactor("create", "serviceaccounts", seen.reactor(inner, "token", nil))

		done := make(chan error, 1)
		go func() {
			resp, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
			if err == nil && resp.IsError() {
				err = resp.Error()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			close(s.release)
			t.Fatal("the issue waited for the WAL write before creating the Secret")
		}
		if seen.counts["secret"] != 0 || seen.counts["token"] != 1 {
			t.Fatalf("WAL entries stored at Secret create %d, at TokenRequest %d; want 0 and 1", seen.counts["secret"], seen.counts["token"])
		}
		if wals, _ := framework.ListWAL(context.Background(), inner); len(wals) != 0 {
			t.Errorf("WAL entries left after the issue: %d", len(wals))
		}
	})

	t.Run("ephemeral role: WAL entry before the first object", func(t *testing.T) {
		b, s, fk := ephemeralBackend(t, map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a"})
		seen := &walCountAt{counts: map[string]int{}}
		fk.clientset.PrependReactor("create", "serviceaccounts", seen.reactor(s, "first object", nil))
		mustOK(t, b, s, logical.ReadOperation, "creds/eph", nil)
		if got := seen.counts["first object"]; got != 1 {
			t.Fatalf("WAL entries stored when the ServiceAccount was created: %d, want 1", got)
		}
	})
}

// A WAL write that fails ends the issue before any token exists and
// deletes the Secret created alongside it.
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
	if wals, _ := framework.ListWAL(context.Background(), inner); len(wals) != 0 {
		t.Errorf("WAL entries left: %d", len(wals))
	}
}
