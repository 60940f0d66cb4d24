package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// retiredEndpointPrefix keeps, per cluster, the endpoints a cluster entry
// pointed at before it was re-pointed or deleted, with the credential that
// reaches them (seal-wrapped like clusters/): leases they issued must still
// be revocable there, and only there.
const retiredEndpointPrefix = "retired-endpoints/"

// walGiveUpAge is how long rollback keeps trying an unfinished issue before
// it logs the entry and drops it; retired endpoints outlive it.
const walGiveUpAge = 24 * time.Hour

type retiredEndpoint struct {
	Cluster   string        `json:"cluster"`
	Config    clusterConfig `json:"config"`
	RetiredAt time.Time     `json:"retired_at"`
	// KeepUntil is when no lease or WAL entry from the endpoint can remain.
	KeepUntil time.Time `json:"keep_until"`
}

func retiredEndpointKey(cluster, id string) string {
	return retiredEndpointPrefix + cluster + "/" + id
}

// retireEndpoint stores cfg's endpoint for the leases it issued. maxLease
// bounds how long they live.
func retireEndpoint(ctx context.Context, s logical.Storage, cluster string, cfg *clusterConfig, maxLease time.Duration, now time.Time) error {
	rec := retiredEndpoint{
		Cluster: cluster, Config: *cfg, RetiredAt: now.UTC(),
		KeepUntil: now.Add(maxLease + tokenExpirySkew + walGiveUpAge).UTC(),
	}
	rec.Config.EndpointID = cfg.endpointID()
	entry, err := logical.StorageEntryJSON(retiredEndpointKey(cluster, rec.Config.EndpointID), &rec)
	if err != nil {
		return fmt.Errorf("encoding retired endpoint of cluster %q: %w", cluster, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing retired endpoint of cluster %q: %w", cluster, err)
	}
	return nil
}

func getRetiredEndpoint(ctx context.Context, s logical.Storage, cluster, id string) (*retiredEndpoint, error) {
	entry, err := s.Get(ctx, retiredEndpointKey(cluster, id))
	if err != nil {
		return nil, fmt.Errorf("reading retired endpoint %s of cluster %q: %w", id, cluster, err)
	}
	if entry == nil {
		return nil, nil
	}
	var rec retiredEndpoint
	if err := entry.DecodeJSON(&rec); err != nil {
		return nil, fmt.Errorf("decoding retired endpoint %s of cluster %q: %w", id, cluster, err)
	}
	return &rec, nil
}

// listRetiredEndpoints returns a cluster's retired endpoints.
func listRetiredEndpoints(ctx context.Context, s logical.Storage, cluster string) ([]*retiredEndpoint, error) {
	ids, err := s.List(ctx, retiredEndpointPrefix+cluster+"/")
	if err != nil {
		return nil, fmt.Errorf("listing retired endpoints of cluster %q: %w", cluster, err)
	}
	out := make([]*retiredEndpoint, 0, len(ids))
	for _, id := range ids {
		rec, err := getRetiredEndpoint(ctx, s, cluster, id)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// pruneRetiredEndpoints deletes retired endpoints no lease can need any
// more, and returns how many it deleted.
func (b *backend) pruneRetiredEndpoints(ctx context.Context, s logical.Storage, now time.Time) (int, error) {
	clusters, err := s.List(ctx, retiredEndpointPrefix)
	if err != nil {
		return 0, fmt.Errorf("listing retired endpoints: %w", err)
	}
	pruned := 0
	for _, dir := range clusters {
		cluster := dir[:len(dir)-1] // List returns "name/"
		recs, err := listRetiredEndpoints(ctx, s, cluster)
		if err != nil {
			return pruned, err
		}
		for _, rec := range recs {
			if now.Before(rec.KeepUntil) {
				continue
			}
			id := rec.Config.endpointID()
			if err := s.Delete(ctx, retiredEndpointKey(cluster, id)); err != nil {
				return pruned, fmt.Errorf("deleting retired endpoint %s of cluster %q: %w", id, cluster, err)
			}
			b.dropCachedClient(retiredClientKey(cluster, id))
			b.Logger().Info("forgot a retired endpoint", "cluster", cluster, "endpoint", id, "kubernetes_host", rec.Config.Host, "retired_at", rec.RetiredAt)
			pruned++
		}
	}
	return pruned, nil
}
