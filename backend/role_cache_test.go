package backend

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// countingStorage counts reads of role entries and can hold one read until
// released, to stage a race with an invalidation.
type countingStorage struct {
	logical.Storage
	mu        sync.Mutex
	roleGets  int
	hold      chan struct{} // when set, the next role read waits for it to close
	holdingCh chan struct{} // closed once a read is waiting on hold
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	entry, err := s.Storage.Get(ctx, key)
	if strings.HasPrefix(key, roleStoragePrefix) {
		s.mu.Lock()
		s.roleGets++
		hold, holding := s.hold, s.holdingCh
		s.hold = nil
		s.mu.Unlock()
		if hold != nil {
			close(holding)
			<-hold
		}
	}
	return entry, err
}

func (s *countingStorage) gets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roleGets
}

func leaseTTL(t *testing.T, b *backend, s logical.Storage) time.Duration {
	t.Helper()
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	return resp.Secret.TTL
}

func TestRoleCacheReadsStorageOnce(t *testing.T) {
	b, inner, _ := newConfiguredBackend(t)
	s := &countingStorage{Storage: inner}
	for range 3 {
		mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	}
	if got := s.gets(); got != 1 {
		t.Fatalf("3 creds reads read the role from storage %d times, want 1", got)
	}
}

func TestRoleCacheSeesChanges(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		change func(t *testing.T, b *backend, s logical.Storage)
		// wantTTL is the next lease's TTL; 0 means the role is gone (a 400).
		wantTTL time.Duration
	}{
		{"role written through the API", func(t *testing.T, b *backend, s logical.Storage) {
			mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"ttl": "7m"})
		}, 7 * time.Minute},
		{"role deleted through the API", func(t *testing.T, b *backend, s logical.Storage) {
			mustOK(t, b, s, logical.DeleteOperation, "roles/"+testRole, nil)
		}, 0},
		{"role replicated from another node, then Invalidate", func(t *testing.T, b *backend, s logical.Storage) {
			storeRoleTTL(t, s, 9*time.Minute)
			b.Invalidate(ctx, roleStoragePrefix+testRole)
		}, 9 * time.Minute},
		{"role deleted on another node, then Invalidate", func(t *testing.T, b *backend, s logical.Storage) {
			if err := s.Delete(ctx, roleStoragePrefix+testRole); err != nil {
				t.Fatal(err)
			}
			b.Invalidate(ctx, roleStoragePrefix+testRole)
		}, 0},
		{"mount cleaned up", func(t *testing.T, b *backend, s logical.Storage) {
			storeRoleTTL(t, s, 11*time.Minute)
			b.Cleanup(ctx)
		}, 11 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			before := leaseTTL(t, b, s) // caches the role
			if before == tc.wantTTL {
				t.Fatalf("the default TTL %s equals the changed one; the case proves nothing", before)
			}
			tc.change(t, b, s)
			if tc.wantTTL == 0 {
				mustBadRequest(t, b, s, logical.ReadOperation, "creds/"+testRole, nil, "does not exist")
				return
			}
			if got := leaseTTL(t, b, s); got != tc.wantTTL {
				t.Fatalf("lease TTL after the change = %s, want %s", got, tc.wantTTL)
			}
		})
	}
}

// Without an invalidation the cache is what creds uses: a storage change
// that no Invalidate announced stays unseen. This is what makes the cases
// above meaningful.
func TestRoleCacheServesFromMemory(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	before := leaseTTL(t, b, s)
	storeRoleTTL(t, s, 9*time.Minute)
	if got := leaseTTL(t, b, s); got != before {
		t.Fatalf("lease TTL = %s, want the cached role's %s", got, before)
	}
}

// A read that started before an invalidation must not cache the old role.
func TestRoleCacheReadRacingInvalidation(t *testing.T) {
	ctx := context.Background()
	b, inner, _ := newConfiguredBackend(t)
	s := &countingStorage{Storage: inner, hold: make(chan struct{}), holdingCh: make(chan struct{})}
	hold, holding := s.hold, s.holdingCh

	done := make(chan error, 1)
	go func() {
		_, err := b.roles.get(ctx, s, testRole)
		done <- err
	}()
	<-holding // the read has the old role and waits
	storeRoleTTL(t, inner, 9*time.Minute)
	b.Invalidate(ctx, roleStoragePrefix+testRole)
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	role, err := b.roles.get(ctx, s, testRole)
	if err != nil {
		t.Fatal(err)
	}
	if role.TTL != 9*time.Minute {
		t.Fatalf("role TTL = %s after the racing read; the stale role was cached", role.TTL)
	}
	if got := s.gets(); got != 2 {
		t.Fatalf("role read from storage %d times, want 2 (the racing read must not cache)", got)
	}
}

// storeRoleTTL changes the stored role behind the backend's back, as
// replication from another node would.
func storeRoleTTL(t *testing.T, s logical.Storage, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	role, err := getRole(ctx, s, testRole)
	if err != nil || role == nil {
		t.Fatalf("reading role: %v %v", role, err)
	}
	role.TTL = ttl
	entry, err := logical.StorageEntryJSON(roleStoragePrefix+testRole, role)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, entry); err != nil {
		t.Fatal(err)
	}
}

// Concurrent creds share one cached role; run with -race this shows that
// nothing on the issue path writes to it.
func TestRoleCacheSharedByConcurrentIssues(t *testing.T) {
	cases := []struct {
		name   string
		fields map[string]interface{}
		path   string
	}{
		{"existing service account", nil, "creds/" + testRole},
		{"generated rules", map[string]interface{}{"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": "team-a", "extra_labels": "team=a"}, "creds/eph"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b *backend
			var s logical.Storage
			if tc.fields == nil {
				b, s, _ = newConfiguredBackend(t)
			} else {
				b, s, _ = ephemeralBackend(t, tc.fields)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 2 {
						resp, err := request(t, b, s, logical.ReadOperation, tc.path, nil)
						if err == nil && resp.IsError() {
							err = resp.Error()
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
