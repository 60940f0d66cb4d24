package backend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/mitchellh/mapstructure"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

const walBoundSecretKind = "bound_secret"

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

// walBoundSecret names a Secret the issue flow is about to create. The entry
// is removed once the lease exists; if it is still there after the rollback
// age, the lease never came to be and the Secret is deleted.
type walBoundSecret struct {
	Cluster   string `mapstructure:"cluster"`
	Namespace string `mapstructure:"namespace"`
	Name      string `mapstructure:"name"`
}

func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data interface{}) error {
	if kind != walBoundSecretKind {
		return fmt.Errorf("unknown WAL entry kind %q", kind)
	}
	var entry walBoundSecret
	if err := mapstructure.Decode(data, &entry); err != nil {
		return fmt.Errorf("decoding WAL entry: %w", err)
	}
	client, err := b.client(ctx, req.Storage, entry.Cluster)
	var notFound errClusterNotFound
	if errors.As(err, &notFound) {
		// Nothing can reach that cluster any more; keeping the entry would
		// only retry forever. tidy cleans such Secrets once it is back.
		b.Logger().Warn("dropping WAL entry for a deleted cluster", "cluster", entry.Cluster, "namespace", entry.Namespace, "secret", entry.Name)
		return nil
	}
	if err != nil {
		return err
	}
	secret, err := client.api.GetSecret(ctx, entry.Namespace, entry.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up bound Secret %s/%s for rollback: %w", entry.Namespace, entry.Name, err)
	}
	if secret.Labels[managedByLabel] != managedByValue {
		return nil // not ours: never delete a foreign object
	}
	if err := client.api.DeleteSecret(ctx, entry.Namespace, entry.Name, secret.UID); err != nil {
		return fmt.Errorf("deleting orphaned bound Secret %s/%s: %w", entry.Namespace, entry.Name, err)
	}
	b.Logger().Info("rolled back bound Secret of an unfinished issue", "cluster", entry.Cluster, "namespace", entry.Namespace, "secret", entry.Name)
	return nil
}
