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
	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/client-go/rest"
)

const backendHelp = `
The scanner secrets engine issues short-lived Kubernetes service-account
tokens, with a ready kubeconfig, as Vault leases. Configure one or more
clusters under clusters/, map roles to service accounts under roles/, and
read creds/<role>. Revoking the lease deletes the Secret the token is bound
to, so the token stops working within seconds.
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
}

// clusterClient is a cached client together with what it was built from.
type clusterClient struct {
	api      kubeAPI
	endpoint *endpoint
	// revocable remembers, per "kind/namespace", when the plugin was last
	// found allowed to delete what revoke deletes.
	revocable sync.Map
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
	}
	b.Backend = &framework.Backend{
		Help:           strings.TrimSpace(backendHelp),
		BackendType:    logical.TypeLogical,
		RunningVersion: version,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{clusterStoragePrefix},
		},
		Paths: framework.PathAppend(
			pathClusters(b),
			pathRoles(b),
			pathCreds(b),
			pathTidy(b),
		),
		Secrets:           []*framework.Secret{secretToken(b)},
		WALRollback:       b.walRollback,
		WALRollbackMinAge: walRollbackMinAge(),
		Invalidate:        b.invalidate,
		Clean: func(context.Context) {
			b.resetClients()
			b.roles.reset()
		},
	}
	return b
}

func (b *backend) invalidate(_ context.Context, key string) {
	if name, ok := strings.CutPrefix(key, clusterStoragePrefix); ok {
		b.resetClient(name)
	}
	if name, ok := strings.CutPrefix(key, roleStoragePrefix); ok {
		b.roles.invalidate(name)
	}
}

func (b *backend) resetClient(name string) {
	b.clientsLock.Lock()
	defer b.clientsLock.Unlock()
	delete(b.clients, name)
}

func (b *backend) resetClients() {
	b.clientsLock.Lock()
	defer b.clientsLock.Unlock()
	b.clients = map[string]*clusterClient{}
}

// errClusterNotFound lets callers turn a missing cluster into a 400.
type errClusterNotFound struct{ name string }

func (e errClusterNotFound) Error() string {
	return fmt.Sprintf("cluster %q is not configured; write clusters/%s first", e.name, e.name)
}

// client returns the cached client for a cluster, building it on first use.
func (b *backend) client(ctx context.Context, s logical.Storage, name string) (*clusterClient, error) {
	b.clientsLock.RLock()
	c, ok := b.clients[name]
	b.clientsLock.RUnlock()
	if ok {
		return c, nil
	}

	b.clientsLock.Lock()
	defer b.clientsLock.Unlock()
	if c, ok := b.clients[name]; ok {
		return c, nil
	}
	cfg, err := getCluster(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errClusterNotFound{name: name}
	}
	ep, err := cfg.resolve(b.inCluster, "vault-plugin-scanner/"+b.version, b.requestTimeout)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	api, err := b.newKubeAPI(ep.restConfig)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	c = &clusterClient{api: api, endpoint: ep}
	b.clients[name] = c
	return c, nil
}

// cleanupContext gives undo work its own deadline, so a cancelled request
// still deletes what it created.
func (b *backend) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), b.requestTimeout)
}
