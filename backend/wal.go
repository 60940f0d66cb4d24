package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const walObjectsKind = "lease_objects"

// walRollbackMinAgeSetting may be shortened at link time
// (-X .../backend.walRollbackMinAgeSetting=5s) so tests need not wait ten
// minutes; it is never changed at run time.
var walRollbackMinAgeSetting = "10m"

func walRollbackMinAge() time.Duration {
	d, err := time.ParseDuration(walRollbackMinAgeSetting)
	if err != nil || d <= 0 {
		return 10 * time.Minute
	}
	return d
}

// walEntry names the objects of an issue that has not become a lease yet.
// It is removed once the lease exists; if it is still there after the
// rollback age, the lease never came to be and the objects are deleted.
type walEntry struct {
	Cluster   string    `json:"cluster"`
	Endpoint  string    `json:"endpoint,omitempty"`
	IssueID   string    `json:"issue_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Objects carry a UID once created; one without is deleted only if it
	// carries IssueID.
	Objects []objectRef `json:"objects"`
}

// walRollback deletes what an unfinished issue created, on the endpoint
// that created it. It keeps the entry (returns an error) while anything is
// left or that endpoint cannot be reached, and gives up, loudly, after
// walGiveUpAge.
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data interface{}) error {
	if kind != walObjectsKind && kind != walRotationKind {
		return fmt.Errorf("unknown WAL entry kind %q", kind)
	}
	// The entry comes back as generic JSON; round-trip it into the struct.
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("re-encoding WAL entry: %w", err)
	}
	var entry walEntry
	if err := json.Unmarshal(raw, &entry); err != nil {
		return fmt.Errorf("decoding WAL entry: %w", err)
	}
	if kind == walRotationKind {
		err = b.rollbackRotation(ctx, req.Storage, &entry)
	} else {
		err = b.rollbackEntry(ctx, req.Storage, &entry)
	}
	if err == nil {
		return nil
	}
	// Entries from before created_at was recorded get one try.
	if entry.CreatedAt.IsZero() || time.Since(entry.CreatedAt) > walGiveUpAge {
		b.Logger().Error("giving up on rolling back an unfinished issue; delete its objects by hand or let tidy remove them",
			"cluster", entry.Cluster, "endpoint", entry.Endpoint, "objects", describeRefs(entry.Objects), "created_at", entry.CreatedAt, "error", err)
		return nil
	}
	return err
}

func (b *backend) rollbackEntry(ctx context.Context, s logical.Storage, entry *walEntry) error {
	client, err := b.endpointClient(ctx, s, entry.Cluster, entry.Endpoint)
	if err != nil {
		return fmt.Errorf("rolling back on cluster %q: %w", entry.Cluster, err)
	}
	var errs []error
	for _, ref := range inRevokeOrder(entry.Objects) {
		if err := b.deleteIfFromIssue(ctx, s, client.api, ref, entry.IssueID); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ref, err))
		}
	}
	if len(errs) == 0 {
		b.Logger().Info("rolled back an unfinished issue", "cluster", entry.Cluster, "endpoint", entry.Endpoint, "objects", describeRefs(entry.Objects))
	}
	return errors.Join(errs...)
}

// walGiveUpAge is how long rollback keeps trying an unfinished issue before
// it logs the entry and drops it; retired endpoints outlive it.
const walGiveUpAge = 24 * time.Hour

func (b *backend) deleteWAL(ctx context.Context, s logical.Storage, id string) {
	if err := framework.DeleteWAL(ctx, s, id); err != nil {
		// Rollback will find nothing left to delete and drop the entry.
		b.Logger().Warn("deleting WAL entry", "id", id, "error", err)
	}
}

// rollbackRotation deletes the Secret of a rotation that never got stored.
// A Secret that any endpoint of the cluster holds (current or retired, as
// its credential or pending deletion) was stored after all, only the WAL
// delete failed: it is left alone, else that endpoint's leases could no
// longer be revoked. The cluster lock keeps a write from moving a
// credential between the check and the delete.
func (b *backend) rollbackRotation(ctx context.Context, s logical.Storage, entry *walEntry) error {
	b.clusterLock.Lock()
	defer b.clusterLock.Unlock()
	held, err := heldRotationSecrets(ctx, s, entry.Cluster)
	if err != nil {
		return err
	}
	entry.Objects = slices.DeleteFunc(slices.Clone(entry.Objects), func(ref objectRef) bool {
		return slices.ContainsFunc(held, func(h objectRef) bool { return sameObject(h, ref) })
	})
	if len(entry.Objects) == 0 {
		return nil
	}
	return b.rollbackEntry(ctx, s, entry)
}

// heldRotationSecrets are the Secrets that credentials stored for cluster
// are bound to: the current entry's and every retired endpoint's rotated
// credential and pending deletions.
func heldRotationSecrets(ctx context.Context, s logical.Storage, cluster string) ([]objectRef, error) {
	cfg, err := getCluster(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	retired, err := listRetiredEndpoints(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	configs := make([]*clusterConfig, 0, len(retired)+1)
	if cfg != nil {
		configs = append(configs, cfg)
	}
	for _, r := range retired {
		configs = append(configs, &r.Config)
	}
	var held []objectRef
	for _, c := range configs {
		if c.RotatedSecret != nil {
			held = append(held, *c.RotatedSecret)
		}
		for _, p := range c.PendingDeletion {
			held = append(held, p.Ref)
		}
	}
	return held, nil
}

// sameObject says whether ref, possibly known only by name (a create whose
// outcome was unknown), may be the object held.
func sameObject(held, ref objectRef) bool {
	if ref.UID != "" && held.UID == ref.UID {
		return true
	}
	return held.Kind == ref.Kind && held.Namespace == ref.Namespace && held.Name == ref.Name
}
