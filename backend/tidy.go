package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Tidy's work is bounded, whatever roles, namespaces and objects exist: a
// namespace user can create labelled objects without limit, and roles can
// name many namespaces. The bounds leave what they cut for a later run and
// say so in the response.
const (
	// tidyPageSize objects are listed per request. Metadata only, but
	// annotations may hold up to 256 KiB per object, so a page stays under
	// about 25 MiB however its objects were made.
	tidyPageSize = 100
	// maxTidyPagesPerList caps the requests for one kind in one namespace
	// (100,000 objects): far above what leases leave, far below what would
	// keep tidy busy for hours.
	maxTidyPagesPerList = 1000
	// maxTidyNamespacesPerCluster caps the namespaces tidied per cluster in
	// one run; the next run continues with the ones after them, so all are
	// visited in turn.
	maxTidyNamespacesPerCluster = 256
	// maxTidyClustersPerRun caps the clusters one run visits: a clusters/
	// writer chooses how many there are, and each unreachable one costs a
	// timeout. The next run continues with the others.
	maxTidyClustersPerRun = 32
	// maxTidyReportEntries caps each list in the response and the log lines
	// about objects: their number is the attacker's to choose.
	maxTidyReportEntries = 100
)

// tidyReport is a list of findings of which only the first
// maxTidyReportEntries are kept; total counts them all.
type tidyReport struct {
	entries []string
	total   int
}

// add records entry and reports whether it was kept.
func (r *tidyReport) add(entry string) bool {
	r.total++
	if len(r.entries) >= maxTidyReportEntries {
		return false
	}
	r.entries = append(r.entries, entry)
	return true
}

// withOverflow lists the entries kept and, if some were not, how many.
func (r *tidyReport) withOverflow() []string {
	out := nonNil(slices.Clone(r.entries))
	if left := r.total - len(r.entries); left > 0 {
		out = append(out, fmt.Sprintf("%d more not shown", left))
	}
	return out
}

// tidyResult counts what one tidy run did.
type tidyResult struct {
	deleted map[string]int // by kind
	// skipped names what tidy did not look at (not allowed, or over a
	// bound); errors what failed; unverified the objects labelled as the
	// plugin's that do not carry this mount's mark, which tidy never
	// deletes.
	skipped    tidyReport
	errors     tidyReport
	unverified tidyReport
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
		"skipped":         r.skipped.withOverflow(),
		"errors":          r.errors.withOverflow(),
		// "Kind namespace/name" each, the first maxTidyReportEntries only;
		// unverified_total counts them all.
		"unverified":       nonNil(slices.Clone(r.unverified.entries)),
		"unverified_total": r.unverified.total,
	}
}

// tidyTargets maps each cluster to the namespaces its objects may be in:
// those its roles create objects in ("" stands for every namespace) and
// those of the plugin's own service accounts on it, where rotation puts
// the Secrets its credentials are bound to.
func tidyTargets(ctx context.Context, s logical.Storage) (map[string][]string, error) {
	clusters, err := s.List(ctx, clusterStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing clusters: %w", err)
	}
	targets := map[string][]string{}
	for _, c := range clusters {
		own, err := ownNamespaces(ctx, s, c)
		if err != nil {
			return nil, err
		}
		targets[c] = own
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
		targets[role.Cluster] = append(targets[role.Cluster], role.namespaces(nil)...)
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

// ownNamespaces names the namespaces of the service accounts whose stored
// credentials reach cluster, current and retired: a rotation Secret
// orphaned by a crash is in one of them. A credential without service
// account claims (or the pod's own, in-cluster) adds none.
func ownNamespaces(ctx context.Context, s logical.Storage, cluster string) ([]string, error) {
	var jwts []string
	cfg, err := getCluster(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		jwts = append(jwts, cfg.JWT)
	}
	retired, err := listRetiredEndpoints(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	for _, rec := range retired {
		jwts = append(jwts, rec.Config.JWT)
	}
	var out []string
	for _, jwt := range jwts {
		if jwt == "" {
			continue
		}
		claims, err := parseTokenClaims(jwt)
		if err != nil {
			continue
		}
		if ns, _, ok := claims.serviceAccount(); ok {
			out = append(out, ns)
		}
	}
	return out, nil
}

// thisRun picks at most limit of items (a cluster's namespaces, or the
// clusters), starting after those the previous run visited under key, and
// says how many it left out.
func (b *backend) thisRun(key string, items []string, limit int) (visit []string, left int) {
	if len(items) <= limit {
		return items, 0
	}
	b.tidyLock.Lock()
	defer b.tidyLock.Unlock()
	if b.tidyStart == nil {
		b.tidyStart = map[string]int{}
	}
	start := b.tidyStart[key] % len(items)
	for i := range limit {
		visit = append(visit, items[(start+i)%len(items)])
	}
	b.tidyStart[key] = (start + limit) % len(items)
	return visit, len(items) - len(visit)
}

// clustersKey keys the clusters' window in tidyStart; no cluster name
// contains a slash.
const clustersKey = "/"

// tidy deletes, on every cluster, the plugin's objects of every kind that
// carry this mount's mark and whose expires-at is before cutoff,
// token-killing kinds first. Labels and annotations alone prove nothing:
// labelled objects without the mark are reported, never deleted.
func (b *backend) tidy(ctx context.Context, s logical.Storage, cutoff time.Time) (*tidyResult, error) {
	key, err := b.ownershipKey(ctx, s)
	if err != nil {
		return nil, err
	}
	targets, err := tidyTargets(ctx, s)
	if err != nil {
		return nil, err
	}
	result := &tidyResult{deleted: map[string]int{}}
	clusters, left := b.thisRun(clustersKey, sortedKeys(targets), maxTidyClustersPerRun)
	if left > 0 {
		result.skipped.add(fmt.Sprintf("%d of the %d clusters were not visited: tidy visits at most %d per run, and the next run continues with the others",
			left, len(targets), maxTidyClustersPerRun))
	}
	for _, cluster := range clusters {
		client, err := b.client(ctx, s, cluster)
		if err != nil {
			result.errors.add(fmt.Sprintf("cluster %q: %v", cluster, err))
			continue
		}
		namespaced, left := b.thisRun(cluster, targets[cluster], maxTidyNamespacesPerCluster)
		if left > 0 {
			result.skipped.add(fmt.Sprintf("cluster %q: %d of its %d namespaces were not visited: tidy visits at most %d per cluster per run, and the next run continues with the others",
				cluster, left, len(targets[cluster]), maxTidyNamespacesPerCluster))
		}
	kinds:
		for _, kind := range kindsInDeleteOrder {
			namespaces := namespaced
			if !objectKinds[kind].namespaced {
				namespaces = []string{""}
			}
			for _, ns := range namespaces {
				if !b.tidyKind(ctx, client, key, kind, ns, cutoff, result) {
					break kinds // unreachable: one timeout per cluster is enough
				}
			}
		}
	}
	b.Logger().Info("tidy finished", "deleted", result.data()["deleted"], "skipped", result.skipped.total,
		"errors", result.errors.total, "unverified", result.unverified.total)
	return result, nil
}

// tidyKind tidies one kind in one namespace, page by page; it reports false
// when the API server could not be asked at all.
func (b *backend) tidyKind(ctx context.Context, client *clusterClient, key ownershipKey, kind, ns string, cutoff time.Time, result *tidyResult) bool {
	where := fmt.Sprintf("cluster %q: %s", client.cluster, objectKinds[kind].resource)
	if ns != "" {
		where += fmt.Sprintf(" in namespace %q", ns)
	}
	continueToken := ""
	for page := 0; ; page++ {
		if page == maxTidyPagesPerList {
			result.skipped.add(fmt.Sprintf("%s: more than %d labelled objects; tidy looked at the first %d only", where, maxTidyPagesPerList*tidyPageSize, maxTidyPagesPerList*tidyPageSize))
			return true
		}
		list, err := client.api.ListManaged(ctx, kind, ns, tidyPageSize, continueToken)
		switch {
		case apierrors.IsForbidden(err):
			result.skipped.add(where + ": the plugin may not list them")
			return true
		case err != nil:
			result.errors.add(fmt.Sprintf("listing %s: %v", where, err))
			var status apierrors.APIStatus
			return errors.As(err, &status)
		}
		for i := range list.Items {
			b.tidyObject(ctx, client, key, kind, &list.Items[i], cutoff, result)
		}
		if continueToken = list.Continue; continueToken == "" {
			return true
		}
	}
}

// tidyObject deletes obj, by UID, if this mount's mark proves it the
// plugin's, it belongs to this cluster entry and it expired before cutoff.
// The mark covers every annotation that decision reads.
func (b *backend) tidyObject(ctx context.Context, client *clusterClient, key ownershipKey, kind string, obj metav1.Object, cutoff time.Time, result *tidyResult) {
	ref := refOf(kind, obj)
	if !key.owns(kind, obj) {
		// Someone else's object labelled like the plugin's (another mount's,
		// a user's), or one of the plugin's whose annotations were edited.
		if result.unverified.add(ref.String()) {
			b.Logger().Warn("tidy left alone an object labelled as the plugin's that does not carry this mount's mark",
				"cluster", client.cluster, "object", ref.String())
		}
		return
	}
	annotations := obj.GetAnnotations()
	if annotations[clusterAnnotation] != client.cluster {
		return // another cluster entry's of this mount, on the same API server
	}
	expiresAt, err := time.Parse(time.RFC3339, annotations[expiresAtAnnotation])
	if err != nil || !expiresAt.Before(cutoff) {
		return // no expiry it can read: never guess one
	}
	if err := client.api.DeleteObject(ctx, ref); err != nil {
		result.errors.add(fmt.Sprintf("deleting %s on cluster %q: %v", ref, client.cluster, err))
		return
	}
	b.Logger().Info("tidy deleted an expired object", "cluster", client.cluster, "object", ref.String(), "expires_at", expiresAt)
	result.deleted[kind]++
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
