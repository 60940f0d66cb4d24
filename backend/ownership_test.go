package backend

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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
