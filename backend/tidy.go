package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// tidyResult counts what one tidy run did.
type tidyResult struct {
	deleted map[string]int // by kind
	// skipped names what the plugin may not list; errors what failed.
	skipped []string
	errors  []string
}

func (r *tidyResult) data() map[string]interface{} {
	total := 0
	byKind := map[string]interface{}{}
	for _, kind := range kindsInDeleteOrder {
		byKind[kind] = r.deleted[kind]
		total += r.deleted[kind]
	}
	return map[string]interface{}{
		"deleted":         total,
		"deleted_by_kind": byKind,
		"skipped":         nonNil(r.skipped),
		"errors":          nonNil(r.errors),
	}
}

// tidyTargets maps each cluster to the namespaces its roles create objects
// in; "" stands for every namespace.
func tidyTargets(ctx context.Context, s logical.Storage) (map[string][]string, error) {
	clusters, err := s.List(ctx, clusterStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing clusters: %w", err)
	}
	targets := map[string][]string{}
	for _, c := range clusters {
		targets[c] = nil
	}
	roleNames, err := s.List(ctx, roleStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	for _, name := range roleNames {
		role, err := getRole(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if role == nil {
			continue
		}
		if _, ok := targets[role.Cluster]; !ok {
			continue // its cluster is gone
		}
		namespaces := []string{role.ServiceAccountNamespace}
		if role.ephemeral() {
			namespaces = role.AllowedNamespaces
			if role.AllowedNamespaceSelector != "" || slices.Contains(namespaces, anyNamespace) {
				namespaces = []string{""}
			}
		}
		targets[role.Cluster] = append(targets[role.Cluster], namespaces...)
	}
	for c, namespaces := range targets {
		slices.Sort(namespaces)
		namespaces = slices.Compact(namespaces)
		if len(namespaces) > 0 && namespaces[0] == "" {
			namespaces = []string{""}
		}
		targets[c] = namespaces
	}
	return targets, nil
}

// tidy deletes, on every cluster, the plugin's objects of every kind whose
// expires-at is before cutoff, token-killing kinds first.
func (b *backend) tidy(ctx context.Context, s logical.Storage, cutoff time.Time) (*tidyResult, error) {
	targets, err := tidyTargets(ctx, s)
	if err != nil {
		return nil, err
	}
	result := &tidyResult{deleted: map[string]int{}}
	for _, cluster := range sortedKeys(targets) {
		client, err := b.client(ctx, s, cluster)
		if err != nil {
			result.errors = append(result.errors, fmt.Sprintf("cluster %q: %v", cluster, err))
			continue
		}
	kinds:
		for _, kind := range kindsInDeleteOrder {
			namespaces := targets[cluster]
			if !objectKinds[kind].namespaced {
				namespaces = []string{""}
			}
			for _, ns := range namespaces {
				if !b.tidyKind(ctx, client, kind, ns, cutoff, result) {
					break kinds // unreachable: one timeout per cluster is enough
				}
			}
		}
	}
	b.Logger().Info("tidy finished", "deleted", result.data()["deleted"], "skipped", len(result.skipped), "errors", len(result.errors))
	return result, nil
}

// tidyKind tidies one kind in one namespace; it reports false when the API
// server could not be asked at all.
func (b *backend) tidyKind(ctx context.Context, client *clusterClient, kind, ns string, cutoff time.Time, result *tidyResult) bool {
	where := fmt.Sprintf("cluster %q: %s", client.cluster, objectKinds[kind].resource)
	if ns != "" {
		where += fmt.Sprintf(" in namespace %q", ns)
	}
	objs, err := client.api.ListManaged(ctx, kind, ns)
	switch {
	case apierrors.IsForbidden(err):
		result.skipped = append(result.skipped, where+": the plugin may not list them")
		return true
	case err != nil:
		result.errors = append(result.errors, fmt.Sprintf("listing %s: %v", where, err))
		var status apierrors.APIStatus
		return errors.As(err, &status)
	}
	for _, obj := range objs {
		if obj.GetAnnotations()[clusterAnnotation] != client.cluster {
			continue // another cluster entry's, possibly another mount's
		}
		expiresAt, err := time.Parse(time.RFC3339, obj.GetAnnotations()[expiresAtAnnotation])
		if err != nil || !expiresAt.Before(cutoff) {
			continue
		}
		ref := refOf(kind, obj)
		if err := client.api.DeleteObject(ctx, ref); err != nil {
			result.errors = append(result.errors, fmt.Sprintf("deleting %s on cluster %q: %v", ref, client.cluster, err))
			continue
		}
		b.Logger().Info("tidy deleted an expired object", "cluster", client.cluster, "object", ref.String(), "expires_at", expiresAt)
		result.deleted[kind]++
	}
	return true
}

// periodic runs on the active node about once a minute: it forgets retired
// endpoints no lease can need, rotates the plugin's own credentials that are
// due (and deletes those they replaced), and runs automatic tidy when it is
// due.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.writesHere() {
		return nil
	}
	now := time.Now()
	if _, err := b.pruneRetiredEndpoints(ctx, req.Storage, now); err != nil {
		b.Logger().Warn("pruning retired endpoints", "error", err)
	}
	b.periodicRotation(ctx, req.Storage, now)
	cfg, err := getTidyConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	if !cfg.Enabled || !b.tidyDue(now, cfg.Interval) {
		return nil
	}
	result, err := b.tidy(ctx, req.Storage, now.Add(-cfg.Grace))
	if err != nil {
		return err
	}
	for _, e := range result.errors {
		b.Logger().Warn("automatic tidy", "error", e)
	}
	return nil
}

// tidyDue reports whether interval has passed since the last automatic
// tidy on this node, and if so starts a new interval.
func (b *backend) tidyDue(now time.Time, interval time.Duration) bool {
	b.tidyLock.Lock()
	defer b.tidyLock.Unlock()
	if !b.lastTidy.IsZero() && now.Sub(b.lastTidy) < interval {
		return false
	}
	b.lastTidy = now
	return true
}
