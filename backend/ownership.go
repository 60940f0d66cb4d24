package backend

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"

	"github.com/hashicorp/vault/sdk/logical"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations prove nothing: anyone who may edit an object in a
// managed namespace may write them. What the plugin deletes without a UID
// it recorded (tidy, and the rollback of a create whose outcome is unknown)
// must therefore carry a mark only this mount can make: an HMAC, under a
// secret key of the mount, over the object's identity and the annotations
// deletion relies on. Another mount, even one with the same cluster names,
// has another key.
const (
	ownershipKeyStorageKey = "ownership-key"
	ownershipKeyBytes      = 32
	ownerMarkAnnotation    = annotationPrefix + "owner-mark"
	// ownerMarkVersion starts the marked text, so a later change of what is
	// marked cannot be confused with this one.
	ownerMarkVersion = "v1"
)

// ownershipKey is a mount's secret for marking the objects it creates.
type ownershipKey []byte

// storedOwnershipKey is the storage entry of the key.
type storedOwnershipKey struct {
	Key []byte `json:"key"`
}

// ownershipKey returns the mount's key, creating and storing it on first
// use. It is cached on the backend (one plugin process serves many mounts,
// each with its own key) and dropped when storage says it changed.
func (b *backend) ownershipKey(ctx context.Context, s logical.Storage) (ownershipKey, error) {
	b.ownershipLock.Lock()
	defer b.ownershipLock.Unlock()
	if b.ownership != nil {
		return b.ownership, nil
	}
	entry, err := s.Get(ctx, ownershipKeyStorageKey)
	if err != nil {
		return nil, fmt.Errorf("reading the mount's ownership key: %w", err)
	}
	if entry != nil {
		var stored storedOwnershipKey
		if err := entry.DecodeJSON(&stored); err != nil {
			return nil, fmt.Errorf("decoding the mount's ownership key: %w", err)
		}
		if len(stored.Key) != ownershipKeyBytes {
			// Never replace it: every object marked so far would become
			// unverifiable, and a truncated key is not to be trusted.
			return nil, fmt.Errorf("the mount's ownership key has %d bytes, want %d", len(stored.Key), ownershipKeyBytes)
		}
		b.ownership = stored.Key
		return b.ownership, nil
	}
	key := make([]byte, ownershipKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating the mount's ownership key: %w", err)
	}
	entry, err = logical.StorageEntryJSON(ownershipKeyStorageKey, storedOwnershipKey{Key: key})
	if err != nil {
		return nil, fmt.Errorf("encoding the mount's ownership key: %w", err)
	}
	// Wrapped with %w: on a performance standby the write fails with
	// logical.ErrReadOnly, which makes Vault forward the request to the
	// active node.
	if err := s.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing the mount's ownership key: %w", err)
	}
	b.ownership = key
	return b.ownership, nil
}

// dropOwnershipKey forgets the cached key, so the next use reads storage.
func (b *backend) dropOwnershipKey() {
	b.ownershipLock.Lock()
	defer b.ownershipLock.Unlock()
	b.ownership = nil
}

// markOwned sets obj's owner mark from its own annotations. It must run
// after every annotation the mark covers is final and right before the
// object is created: a later change of them breaks the mark, and then tidy
// and rollback leave the object alone.
func (b *backend) markOwned(ctx context.Context, s logical.Storage, kind string, obj metav1.Object) error {
	key, err := b.ownershipKey(ctx, s)
	if err != nil {
		return err
	}
	// A copy: objects of one lease may have been built from one map.
	annotations := maps.Clone(obj.GetAnnotations())
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[ownerMarkAnnotation] = key.mark(kind, obj)
	obj.SetAnnotations(annotations)
	return nil
}

// mark is base64url(HMAC-SHA256(key, canonical)).
func (k ownershipKey) mark(kind string, obj metav1.Object) string {
	return base64.RawURLEncoding.EncodeToString(k.sum(kind, obj))
}

// sum is the HMAC of the canonical text: the version tag, kind, namespace,
// name and the issue-id, cluster and expires-at annotations, joined with
// newlines. None of them can hold a newline as the plugin writes them
// (Kubernetes names, an issue id of [a-z0-9], a cluster name, an RFC 3339
// time), so no two objects share a canonical text.
func (k ownershipKey) sum(kind string, obj metav1.Object) []byte {
	a := obj.GetAnnotations()
	fields := [...]string{
		ownerMarkVersion, kind, obj.GetNamespace(), obj.GetName(),
		a[issueAnnotation], a[clusterAnnotation], a[expiresAtAnnotation],
	}
	canonical := make([]byte, 0, 256)
	for i, field := range fields {
		if i > 0 {
			canonical = append(canonical, '\n')
		}
		canonical = append(canonical, field...)
	}
	mac := hmac.New(sha256.New, k)
	mac.Write(canonical)
	return mac.Sum(nil)
}

// owns reports whether obj, as read back from the API server, carries a
// mark this key made over its current kind, name and annotations.
func (k ownershipKey) owns(kind string, obj metav1.Object) bool {
	if len(k) == 0 {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(obj.GetAnnotations()[ownerMarkAnnotation])
	if err != nil || len(got) != sha256.Size {
		return false
	}
	return hmac.Equal(got, k.sum(kind, obj))
}

// deleteIfFromIssue deletes an object known only by name (a create whose
// outcome is unknown), and only if it is provably this issue's: it carries
// issueID and the mount's mark. An object of that name may be someone
// else's, who may have copied the issue id onto it.
func (b *backend) deleteIfFromIssue(ctx context.Context, s logical.Storage, api kubeAPI, ref objectRef, issueID string) error {
	if ref.UID != "" {
		return api.DeleteObject(ctx, ref)
	}
	key, err := b.ownershipKey(ctx, s)
	if err != nil {
		return err
	}
	err = deleteIfMarked(ctx, api, key, ref, issueID)
	if errors.Is(err, errNotOwned) {
		// Retrying cannot change the answer; say so once and let the
		// caller count it as done.
		b.Logger().Warn("not deleting an object of an unfinished issue", "object", ref.String(), "reason", err.Error())
		return nil
	}
	return err
}

func deleteIfMarked(ctx context.Context, api kubeAPI, key ownershipKey, ref objectRef, issueID string) error {
	if ref.UID != "" {
		return api.DeleteObject(ctx, ref)
	}
	meta, err := api.GetObjectMeta(ctx, ref)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("looking up %s, whose create may have succeeded: %w", ref, err)
	case issueID == "" || meta.GetLabels()[managedByLabel] != managedByValue || meta.GetAnnotations()[issueAnnotation] != issueID:
		return nil // not created by this issue: never touch it
	case !key.owns(ref.Kind, meta):
		return errNotOwned
	}
	return api.DeleteObject(ctx, refOf(ref.Kind, meta))
}

// errNotOwned says an object carries this issue's id but not the mount's
// mark: someone else made or edited it, so the plugin leaves it alone.
var errNotOwned = errors.New("it carries this issue's id but not the mount's ownership mark, so it was made or edited by someone else; left alone")
