package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/client-go/rest"
)

// retiredEndpointPrefix keeps, per cluster, the endpoints a cluster entry
// pointed at before it was re-pointed or deleted, with the credential that
// reaches them (seal-wrapped like clusters/): leases they issued must still
// be revocable there, and only there.
const retiredEndpointPrefix = "retired-endpoints/"

// leaseHorizonPrefix records, per endpoint, a time by which every lease the
// endpoint issued has expired. A retired endpoint is kept until then (plus
// walGiveUpAge), whatever the mount's max lease TTL says now: the mount may
// have been tuned down after a long lease was issued.
const leaseHorizonPrefix = "endpoint-leases/"

// leaseHorizonSlack is added to a lease's expiry when the horizon moves, so
// that the issues of the next minutes fall inside it and write nothing.
const leaseHorizonSlack = 10 * time.Minute

type retiredEndpoint struct {
	Cluster   string        `json:"cluster"`
	Config    clusterConfig `json:"config"`
	RetiredAt time.Time     `json:"retired_at"`
}

func retiredEndpointKey(cluster, id string) string {
	return retiredEndpointPrefix + cluster + "/" + id
}

func leaseHorizonKey(cluster, id string) string {
	return leaseHorizonPrefix + cluster + "/" + id
}

// keepUntil is when no lease or WAL entry from the endpoint can remain:
// walGiveUpAge after the later of its retirement and its lease horizon. An
// endpoint from before horizons were recorded may have issued leases that
// no horizon covers; those lived at most the mount's max lease TTL, which is
// the best bound left, so it is read now rather than guessed at retirement.
func (r *retiredEndpoint) keepUntil(horizon time.Time, maxLeaseTTL time.Duration) time.Time {
	last := r.RetiredAt
	if !r.Config.LeaseHorizonRecorded {
		last = last.Add(maxLeaseTTL + tokenExpirySkew)
	}
	if horizon.After(last) {
		last = horizon
	}
	return last.Add(walGiveUpAge).UTC()
}

// retireEndpoint stores cfg's endpoint for the leases it issued; its lease
// horizon stays where it is and is read when the endpoint is pruned.
func retireEndpoint(ctx context.Context, s logical.Storage, cluster string, cfg *clusterConfig, now time.Time) error {
	rec := retiredEndpoint{Cluster: cluster, Config: *cfg, RetiredAt: now.UTC()}
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

// getLeaseHorizon returns the recorded lease horizon of an endpoint, zero
// when none is recorded.
func getLeaseHorizon(ctx context.Context, s logical.Storage, cluster, id string) (time.Time, error) {
	entry, err := s.Get(ctx, leaseHorizonKey(cluster, id))
	if err != nil || entry == nil {
		if err != nil {
			err = fmt.Errorf("reading the lease horizon of endpoint %s of cluster %q: %w", id, cluster, err)
		}
		return time.Time{}, err
	}
	var horizon time.Time
	if err := entry.DecodeJSON(&horizon); err != nil {
		return time.Time{}, fmt.Errorf("decoding the lease horizon of endpoint %s of cluster %q: %w", id, cluster, err)
	}
	return horizon, nil
}

// recordLeaseHorizon makes sure the endpoint's recorded horizon is no
// earlier than expiresAt, the expiry of a lease about to be returned. The
// known horizon is cached on the client, so most issues neither read nor
// write storage; a needed write re-reads storage first, so the horizon never
// moves back even if the cache is stale.
func (c *clusterClient) recordLeaseHorizon(ctx context.Context, s logical.Storage, expiresAt time.Time) error {
	c.horizonLock.Lock()
	defer c.horizonLock.Unlock()
	if !expiresAt.After(c.leaseHorizon) {
		return nil
	}
	stored, err := getLeaseHorizon(ctx, s, c.cluster, c.endpoint.ID)
	if err != nil {
		return err
	}
	if !expiresAt.After(stored) {
		c.leaseHorizon = stored
		return nil
	}
	horizon := expiresAt.Add(leaseHorizonSlack).UTC()
	entry, err := logical.StorageEntryJSON(leaseHorizonKey(c.cluster, c.endpoint.ID), horizon)
	if err != nil {
		return fmt.Errorf("encoding the lease horizon of cluster %q: %w", c.cluster, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("recording when the lease expires, so that cluster %q keeps its endpoint until then: %w", c.cluster, err)
	}
	c.leaseHorizon = horizon
	return nil
}

// pruneRetiredEndpoints forgets retired endpoints no lease can need any
// more, after ending the credentials the plugin rotated to on them, and
// deletes lease horizons whose endpoint is gone. It returns how many
// endpoints it forgot.
func (b *backend) pruneRetiredEndpoints(ctx context.Context, s logical.Storage, now time.Time) (int, error) {
	var clusters []string
	for _, prefix := range []string{retiredEndpointPrefix, leaseHorizonPrefix} {
		dirs, err := s.List(ctx, prefix)
		if err != nil {
			return 0, fmt.Errorf("listing %s: %w", prefix, err)
		}
		for _, dir := range dirs {
			if name, ok := strings.CutSuffix(dir, "/"); ok && !slices.Contains(clusters, name) { // List returns "name/"
				clusters = append(clusters, name)
			}
		}
	}
	maxLeaseTTL := b.System().MaxLeaseTTL()
	pruned := 0
	var errs []error
	for _, cluster := range clusters {
		n, err := b.pruneClusterEndpoints(ctx, s, cluster, now, maxLeaseTTL)
		pruned += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return pruned, errors.Join(errs...)
}

// pruneClusterEndpoints does pruneRetiredEndpoints' work for one cluster,
// under the cluster lock so that no write re-points or retires meanwhile.
func (b *backend) pruneClusterEndpoints(ctx context.Context, s logical.Storage, cluster string, now time.Time, maxLeaseTTL time.Duration) (int, error) {
	b.clusterLock.Lock()
	defer b.clusterLock.Unlock()
	recs, err := listRetiredEndpoints(ctx, s, cluster)
	if err != nil {
		return 0, err
	}
	known := map[string]bool{}
	pruned := 0
	var errs []error
	for _, rec := range recs {
		id := rec.Config.endpointID()
		known[id] = true
		horizon, err := getLeaseHorizon(ctx, s, cluster, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if now.Before(rec.keepUntil(horizon, maxLeaseTTL)) {
			continue
		}
		if err := b.endRetiredCredentials(ctx, s, rec, now); err != nil {
			b.Logger().Warn("a retired endpoint is due to be forgotten, but the credential the plugin rotated to there could not be ended; retrying at the next periodic run",
				"cluster", cluster, "endpoint", id, "credential_id", rec.Config.JWTCredentialID, "error", err)
			errs = append(errs, err)
			continue
		}
		if err := b.forgetRetiredEndpoint(ctx, s, rec); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(known, id)
		pruned++
	}
	if err := b.deleteOrphanedHorizons(ctx, s, cluster, known); err != nil {
		errs = append(errs, err)
	}
	return pruned, errors.Join(errs...)
}

// endRetiredCredentials deletes, by UID on the retired endpoint, the Secrets
// of the credentials the plugin rotated to there: the replaced ones still
// pending deletion first, then the one the endpoint holds (the calls are
// made with it). Forgetting the endpoint without this would leave a token
// with every right the plugin has and no record in Vault. A credential that
// cannot be ended is an error unless it has expired anyway.
func (b *backend) endRetiredCredentials(ctx context.Context, s logical.Storage, rec *retiredEndpoint, now time.Time) error {
	id := rec.Config.endpointID()
	pending := slices.Clone(rec.Config.PendingDeletion)
	// A re-point copies the pending deletions into the new cluster entry
	// too; the ones on this endpoint are ended here, whichever list has
	// them.
	if cfg, err := getCluster(ctx, s, rec.Cluster); err != nil {
		return err
	} else if cfg != nil {
		for _, p := range cfg.PendingDeletion {
			if p.Endpoint == id && !slices.ContainsFunc(pending, func(q pendingSecret) bool { return q.Ref.UID == p.Ref.UID }) {
				pending = append(pending, p)
			}
		}
	}
	type credential struct {
		ref          objectRef
		endpoint     string
		credentialID string
		expiresAt    time.Time
	}
	var creds []credential
	for _, p := range pending {
		creds = append(creds, credential{p.Ref, p.Endpoint, p.CredentialID, p.expiresAt(&rec.Config)})
	}
	if rec.Config.RotatedSecret != nil {
		creds = append(creds, credential{*rec.Config.RotatedSecret, id, rec.Config.JWTCredentialID, rec.Config.JWTExpiresAt})
	}
	var errs []error
	for _, c := range creds {
		err := b.deleteOnEndpoint(ctx, s, rec.Cluster, c.endpoint, c.ref)
		switch {
		case err == nil:
			b.Logger().Info("deleted the Secret of a credential the plugin had rotated to, with its retired endpoint; that credential no longer works",
				"cluster", rec.Cluster, "endpoint", id, "credential_id", c.credentialID, "secret", c.ref.String())
		case !c.expiresAt.IsZero() && !now.Before(c.expiresAt):
			b.Logger().Info("could not delete the Secret of a credential the plugin had rotated to, but the credential has expired",
				"cluster", rec.Cluster, "endpoint", id, "credential_id", c.credentialID, "secret", c.ref.String(), "error", err)
		default:
			errs = append(errs, fmt.Errorf("deleting %s, the Secret of credential %s: %w", c.ref, c.credentialID, err))
		}
	}
	return errors.Join(errs...)
}

// forgetRetiredEndpoint deletes a retired endpoint and everything that
// points at it: its lease horizon, its cached client and the cluster
// entry's pending deletions on it (endRetiredCredentials ended them).
func (b *backend) forgetRetiredEndpoint(ctx context.Context, s logical.Storage, rec *retiredEndpoint) error {
	cluster, id := rec.Cluster, rec.Config.endpointID()
	if err := s.Delete(ctx, retiredEndpointKey(cluster, id)); err != nil {
		return fmt.Errorf("deleting retired endpoint %s of cluster %q: %w", id, cluster, err)
	}
	b.dropCachedClient(retiredClientKey(cluster, id))
	b.Logger().Info("forgot a retired endpoint", "cluster", cluster, "endpoint", id, "kubernetes_host", rec.Config.Host, "retired_at", rec.RetiredAt)
	var errs []error
	if err := s.Delete(ctx, leaseHorizonKey(cluster, id)); err != nil {
		// deleteOrphanedHorizons retries it at the next run.
		errs = append(errs, fmt.Errorf("deleting the lease horizon of endpoint %s of cluster %q: %w", id, cluster, err))
	}
	cfg, err := getCluster(ctx, s, cluster)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if cfg != nil && slices.ContainsFunc(cfg.PendingDeletion, func(p pendingSecret) bool { return p.Endpoint == id }) {
		cfg.PendingDeletion = slices.DeleteFunc(cfg.PendingDeletion, func(p pendingSecret) bool { return p.Endpoint == id })
		if err := putCluster(ctx, s, cluster, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteOrphanedHorizons deletes the lease horizons of a cluster whose
// endpoint is neither its current one nor among retired (the ones still
// kept), so that no storage entry outlives what it describes.
func (b *backend) deleteOrphanedHorizons(ctx context.Context, s logical.Storage, cluster string, retired map[string]bool) error {
	ids, err := s.List(ctx, leaseHorizonPrefix+cluster+"/")
	if err != nil || len(ids) == 0 {
		return err
	}
	cfg, err := getCluster(ctx, s, cluster)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if retired[id] || (cfg != nil && cfg.endpointID() == id) {
			continue
		}
		if err := s.Delete(ctx, leaseHorizonKey(cluster, id)); err != nil {
			errs = append(errs, fmt.Errorf("deleting the lease horizon of endpoint %s of cluster %q: %w", id, cluster, err))
		}
	}
	return errors.Join(errs...)
}

// endpoint is what the plugin and the issued kubeconfigs use for one cluster,
// with the in-cluster defaults resolved.
type endpoint struct {
	ID               string
	KubeconfigHost   string
	KubeconfigCACert string
	// KubeconfigExecCommand is the cluster's kubeconfig_exec_command.
	KubeconfigExecCommand string
	TLSServerName         string
	restConfig            *rest.Config
}

func (c *clusterConfig) resolve(env inClusterEnv, userAgent string, timeout time.Duration) (*endpoint, error) {
	if c.inCluster() && c.connection() != (connection{}) {
		return nil, errInClusterConnection
	}
	ep := &endpoint{ID: c.endpointID(), TLSServerName: c.TLSServerName}
	host, caCert := c.Host, c.CACert
	rc := &rest.Config{
		QPS:       c.QPS,
		Burst:     c.Burst,
		Timeout:   timeout,
		UserAgent: userAgent,
	}
	if host == "" {
		var err error
		if host, err = env.host(); err != nil {
			return nil, err
		}
		ca, err := os.ReadFile(env.CAPath)
		if err != nil {
			return nil, fmt.Errorf("reading the pod's CA certificate: %w", err)
		}
		caCert = string(ca)
	}
	switch {
	case c.UseIssuer:
		// The backend adds the token source (useIssuerTokens).
	case c.JWT != "":
		rc.BearerToken = c.JWT
	default:
		// client-go re-reads this file periodically, so the pod's projected
		// token is picked up after kubelet rotates it.
		rc.BearerTokenFile = env.TokenPath
	}
	rc.Host = host
	rc.TLSClientConfig = rest.TLSClientConfig{CAData: []byte(caCert), ServerName: c.TLSServerName}
	rc.QPS, rc.Burst = effectiveQPS(rc.QPS), effectiveBurst(rc.Burst)
	if c.ProxyURL != "" {
		proxy, err := url.Parse(c.ProxyURL)
		if err != nil {
			// url.Error quotes the URL, and with it any proxy password.
			return nil, errors.New("proxy_url does not parse")
		}
		rc.Proxy = http.ProxyURL(proxy)
	}
	ep.restConfig = rc

	ep.KubeconfigHost, ep.KubeconfigCACert = c.KubeconfigHost, c.KubeconfigCACert
	ep.KubeconfigExecCommand = c.KubeconfigExecCommand
	if ep.KubeconfigHost == "" {
		ep.KubeconfigHost = host
	} else {
		// A different address for users: the name Vault needs may not apply.
		ep.TLSServerName = ""
	}
	if ep.KubeconfigCACert == "" {
		ep.KubeconfigCACert = caCert
	}
	return ep, nil
}

// kubeconfigParams is what an issued kubeconfig says about this endpoint;
// the caller adds the user's credential.
func (ep *endpoint) kubeconfigParams(cluster, user, namespace string) kubeconfigParams {
	return kubeconfigParams{
		ClusterName: cluster, Server: ep.KubeconfigHost, CACert: ep.KubeconfigCACert,
		TLSServerName: ep.TLSServerName, UserName: user, Namespace: namespace,
	}
}
