package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// walObjects names the objects the issue flow is about to create. The entry
// is removed once the lease exists; if it is still there after the rollback
// age, the lease never came to be and the objects are deleted.
type walObjects struct {
	Cluster string      `json:"cluster"`
	Objects []objectRef `json:"objects"`
}

func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data interface{}) error {
	if kind != walObjectsKind {
		return fmt.Errorf("unknown WAL entry kind %q", kind)
	}
	// The entry comes back as generic JSON; round-trip it into the struct.
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("re-encoding WAL entry: %w", err)
	}
	var entry walObjects
	if err := json.Unmarshal(raw, &entry); err != nil {
		return fmt.Errorf("decoding WAL entry: %w", err)
	}
	client, err := b.client(ctx, req.Storage, entry.Cluster)
	var notFound errClusterNotFound
	if errors.As(err, &notFound) {
		// Nothing can reach that cluster any more; keeping the entry would
		// only retry forever.
		b.Logger().Warn("dropping WAL entry for a deleted cluster", "cluster", entry.Cluster, "objects", describeRefs(entry.Objects))
		return nil
	}
	if err != nil {
		return err
	}
	for i := len(entry.Objects) - 1; i >= 0; i-- {
		ref := entry.Objects[i]
		meta, err := client.api.GetObjectMeta(ctx, ref)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case apierrors.IsForbidden(err):
			// The least-privilege RBAC grants create and delete but not get
			// (get on secrets would reveal every Secret's data). The name
			// was generated with random characters for this issue, and an
			// older object of that name would have failed the create, so
			// delete by name.
		case err != nil:
			return fmt.Errorf("looking up %s for rollback: %w", ref, err)
		case meta.GetLabels()[managedByLabel] != managedByValue:
			continue // not ours: never delete a foreign object
		default:
			ref.UID = meta.GetUID()
		}
		if err := client.api.DeleteObject(ctx, ref); err != nil {
			return fmt.Errorf("deleting %s of an unfinished issue: %w", ref, err)
		}
		b.Logger().Info("rolled back an object of an unfinished issue", "cluster", entry.Cluster, "object", ref.String())
	}
	return nil
}
