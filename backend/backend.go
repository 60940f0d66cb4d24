// Package backend implements the vault-plugin-scanner secrets engine: it
// issues short-lived Kubernetes service-account tokens and kubeconfigs as
// Vault leases, each bound to a Secret the plugin deletes on revoke.
package backend

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/client-go/rest"
)

const backendHelp = `
The scanner secrets engine issues short-lived Kubernetes service-account
tokens, with a ready kubeconfig, as Vault leases. Configure one or more
clusters under clusters/ (check them with clusters/<name>/check), map roles
under roles/ to an existing service account or to per-lease service
accounts bound to an existing or generated role, and read creds/<role>;
kubeconfig/<role> gives a token-free kubeconfig whose user runs vault to
read creds/. Revoking the lease deletes the object the token depends on
(its bound Secret, or the per-lease ServiceAccount), so the token stops
working within seconds. tidy removes what a lost revoke left behind, and
only what the plugin can prove it created.
`

const operationPrefix = "scanner"

// backend is one mount of the plugin. Everything mutable lives here, never
// in package variables: one plugin process serves many mounts.
type backend struct {
	*framework.Backend

	version   string
	inCluster inClusterEnv
	// requestTimeout bounds each call to an API server; tests shorten it.
	requestTimeout time.Duration
	// newKubeAPI builds the client for a cluster; tests replace it.
	newKubeAPI func(*rest.Config) (kubeAPI, error)

	clientsLock sync.RWMutex
	clients     map[string]*clusterClient

	roles *roleCache

	tidyLock sync.Mutex
	lastTidy time.Time
	// tidyStart is where the next tidy run starts in the sorted clusters
	// (key clustersKey) and, per cluster, in its sorted namespaces, when
	// there are more than one run visits.
	tidyStart map[string]int

	// clusterInUse guards the rule that a cluster a role uses cannot be
	// deleted: role writes hold it for reading from the check that their
	// cluster exists until they are stored, cluster deletes hold it for
	// writing. Taken before clusterLock.
	clusterInUse sync.RWMutex

	// clusterLock serialises writes of cluster entries: configuration
	// writes, rotations and the deletion of replaced credentials.
	clusterLock sync.Mutex
	rotation    *rotationState
	// rotationGrace is how long a replaced credential keeps working; tests
	// shorten it.
	rotationGrace time.Duration
	// issuerKeyWarmUp is how long the issuer's next key is published
	// before a rotation may make it sign (issuer.go); tests shorten it.
	issuerKeyWarmUp time.Duration

	// ownership caches the mount's ownership key (see ownership.go) once
	// read or created; nil until then.
	ownershipLock sync.Mutex
	ownership     ownershipKey

	// issuer is the mount as a token issuer (issuer.go).
	issuer issuerState
}

// clusterClient is a cached client together with what it was built from.
type clusterClient struct {
	cluster  string
	api      kubeAPI
	endpoint *endpoint
	// revocable remembers, per "kind/namespace", when the plugin was last
	// found allowed to delete what revoke deletes.
	revocable sync.Map
	// self is whom the plugin is on this cluster (self_identity.go).
	self selfIdentity
	// leaseHorizon is this endpoint's recorded lease horizon as last seen
	// (zero: not read yet); horizonLock serialises its updates.
	horizonLock  sync.Mutex
	leaseHorizon time.Time
}

// Factory returns a logical.Factory reporting version as the plugin's
// running version.
func Factory(version string) logical.Factory {
	return func(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
		b := newBackend(version)
		if err := b.Setup(ctx, conf); err != nil {
			return nil, err
		}
		return b, nil
	}
}

func newBackend(version string) *backend {
	b := &backend{
		version:        version,
		inCluster:      defaultInClusterEnv(),
		requestTimeout: defaultRequestTimeout,
		newKubeAPI:     newClientsetAPI,
		clients:        map[string]*clusterClient{},
		roles:          newRoleCache(),
		rotation:       newRotationState(),
		rotationGrace:  defaultRotationGrace,

		issuerKeyWarmUp: issuerDocumentMaxAge * time.Second,
	}
	b.Backend = &framework.Backend{
		Help:           strings.TrimSpace(backendHelp),
		BackendType:    logical.TypeLogical,
		RunningVersion: version,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{clusterStoragePrefix, retiredEndpointPrefix, ownershipKeyStorageKey, issuerKeysStorageKey},
			// API servers fetch the issuer's discovery document and keys
			// without a Vault token, as from Vault's own OIDC provider.
			Unauthenticated: []string{wellKnownDiscoveryPath, wellKnownKeysPath},
			// An unfinished issue is this cluster's own business: a
			// performance secondary must not roll back the primary's.
			LocalStorage: []string{framework.WALPrefix},
		},
		Paths: framework.PathAppend(
			pathClusters(b),
			pathRoles(b),
			pathCreds(b),
			pathKubeconfig(b),
			pathTidy(b),
			pathIssuer(b),
		),
		Secrets:           []*framework.Secret{secretToken(b)},
		WALRollback:       b.walRollback,
		WALRollbackMinAge: walRollbackMinAge(),
		PeriodicFunc:      b.periodic,
		Invalidate:        b.invalidate,
		InitializeFunc:    b.initialize,
		Clean: func(context.Context) {
			b.rotation.stop()
			b.resetClients()
			b.roles.reset()
			b.dropOwnershipKey()
		},
	}
	return b
}

func (b *backend) invalidate(_ context.Context, key string) {
	if name, ok := strings.CutPrefix(key, clusterStoragePrefix); ok {
		b.dropCachedClient(name)
	}
	if rest, ok := strings.CutPrefix(key, retiredEndpointPrefix); ok {
		if cluster, id, ok := strings.Cut(rest, "/"); ok {
			b.dropCachedClient(retiredClientKey(cluster, id))
		}
	}
	if name, ok := strings.CutPrefix(key, roleStoragePrefix); ok {
		b.roles.invalidate(name)
	}
	if key == ownershipKeyStorageKey {
		b.dropOwnershipKey()
	}
	if key == issuerConfigStorageKey || key == issuerKeysStorageKey {
		b.issuer.drop()
	}
}

// initialize creates the mount's ownership key when the mount starts on a
// node that may write, so that nodes which may not (performance standbys
// and secondaries) find it stored when they first issue.
func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.writesHere() {
		return nil
	}
	if _, err := b.ownershipKey(ctx, req.Storage); err != nil {
		// Not fatal: the first issue or tidy tries again.
		b.Logger().Warn("creating the mount's ownership key at start", "error", err)
	}
	return nil
}

// Clients are cached under the cluster's name for its current endpoint and
// under retiredClientKey for a retired one ('@' is not valid in names).
func retiredClientKey(cluster, id string) string { return cluster + "@" + id }

func (b *backend) dropCachedClient(key string) {
	b.clientsLock.Lock()
	defer b.clientsLock.Unlock()
	delete(b.clients, key)
}

func (b *backend) resetClients() {
	b.clientsLock.Lock()
	defer b.clientsLock.Unlock()
	b.clients = map[string]*clusterClient{}
}

// writesHere reports whether this node may change storage and objects:
// not a standby, and not a secondary unless the mount is local to it.
func (b *backend) writesHere() bool {
	state := b.System().ReplicationState()
	if state.HasState(consts.ReplicationDRSecondary | consts.ReplicationPerformanceStandby) {
		return false
	}
	return !state.HasState(consts.ReplicationPerformanceSecondary) || b.System().LocalMount()
}

// client returns the cached client for a cluster's current endpoint,
// building it on first use.
func (b *backend) client(ctx context.Context, s logical.Storage, name string) (*clusterClient, error) {
	return b.cachedClient(ctx, s, name, func() (string, *clusterConfig, error) {
		cfg, err := getCluster(ctx, s, name)
		if err == nil && cfg == nil {
			err = errClusterNotFound(name)
		}
		return name, cfg, err
	})
}

// endpointClient returns a client for the endpoint that issued a lease or
// WAL entry: the cluster's current one, or a retired one. It fails when
// that endpoint is no longer known, rather than reach another server.
func (b *backend) endpointClient(ctx context.Context, s logical.Storage, cluster, id string) (*clusterClient, error) {
	if id == "" {
		id = legacyEndpointID
	}
	// The current endpoint's client is cached under the cluster's name.
	b.clientsLock.RLock()
	current, cached := b.clients[cluster]
	b.clientsLock.RUnlock()
	if cached && current.endpoint.ID == id {
		return current, nil
	}
	cfg, err := getCluster(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	if cfg != nil && cfg.endpointID() == id {
		return b.client(ctx, s, cluster)
	}
	return b.cachedClient(ctx, s, retiredClientKey(cluster, id), func() (string, *clusterConfig, error) {
		rec, err := getRetiredEndpoint(ctx, s, cluster, id)
		if err == nil && rec == nil {
			err = fmt.Errorf("cluster %q no longer has endpoint %s, which issued this credential, and does not know it as retired: cannot reach the API server that holds its objects", cluster, id)
		}
		if err != nil {
			return "", nil, err
		}
		return cluster, &rec.Config, nil
	})
}

// cachedClient returns the client cached under key, or builds one from the
// configuration load returns (re-checked under the write lock).
func (b *backend) cachedClient(ctx context.Context, s logical.Storage, key string, load func() (string, *clusterConfig, error)) (*clusterClient, error) {
	b.clientsLock.RLock()
	c, ok := b.clients[key]
	b.clientsLock.RUnlock()
	if ok {
		return c, nil
	}

	b.clientsLock.Lock()
	defer b.clientsLock.Unlock()
	if c, ok := b.clients[key]; ok {
		return c, nil
	}
	name, cfg, err := load()
	if err != nil {
		return nil, err
	}
	ep, err := cfg.resolve(b.inCluster, "vault-plugin-scanner/"+b.version, b.requestTimeout)
	if err != nil {
		return nil, userError{fmt.Errorf("cluster %q: %w", name, err)}
	}
	if cfg.UseIssuer {
		if err := b.useIssuerTokens(ctx, s, ep, cfg); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
	}
	api, err := b.newKubeAPI(ep.restConfig)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	c = &clusterClient{cluster: name, api: api, endpoint: ep}
	b.clients[key] = c
	return c, nil
}

// cleanupContext gives undo work its own deadline, so a cancelled request
// still deletes what it created.
func (b *backend) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), b.requestTimeout)
}

// periodic runs on the active node about once a minute: it forgets retired
// endpoints no lease can need, rotates the plugin's own credentials that are
// due (and deletes those they replaced), rotates the issuer's signing keys
// when due, and runs automatic tidy when it is due.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.writesHere() {
		return nil
	}
	now := time.Now()
	if _, err := b.pruneRetiredEndpoints(ctx, req.Storage, now); err != nil {
		b.Logger().Warn("pruning retired endpoints", "error", err)
	}
	b.periodicRotation(ctx, req.Storage, now)
	if err := b.periodicIssuerRotation(ctx, req.Storage, now); err != nil {
		b.Logger().Warn("rotating the issuer's signing keys; retrying at the next periodic run", "error", err)
	}
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
	for _, e := range result.errors.withOverflow() {
		b.Logger().Warn("automatic tidy", "error", e)
	}
	return nil
}

// HandleRequest is the mount's entry point. Requests to routes have their
// fields' types checked first (handlers.go): the framework's conversion
// error quotes the value, so a service_account_jwt (or a proxy_url with its
// password) sent as a JSON list or object would come back in the 400, and
// with it into Vault's audit log. Revoke, renew, rollback and rotation
// carry no caller input and go straight to the framework.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	switch req.Operation {
	case logical.RevokeOperation, logical.RenewOperation, logical.RollbackOperation, logical.RotationOperation:
	default:
		if resp := b.refuseMistypedFields(req); resp != nil {
			return resp, nil
		}
	}
	return b.Backend.HandleRequest(ctx, req)
}

// deleteOnEndpoint deletes ref, by UID, on the endpoint of cluster that
// holds it (current or retired).
func (b *backend) deleteOnEndpoint(ctx context.Context, s logical.Storage, cluster, endpointID string, ref objectRef) error {
	client, err := b.endpointClient(ctx, s, cluster, endpointID)
	if err != nil {
		return err
	}
	return client.api.DeleteObject(ctx, ref)
}
