package backend

import (
	"context"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// roleCache keeps decoded roles in memory for creds/, the hot path, which
// otherwise reads and decodes its role from Vault's storage (a gRPC round
// trip into Vault) on every request. Role writes and deletes on this node
// and Invalidate (writes replicated from another node) drop entries.
//
// The generation counter stops a read that raced with an invalidation from
// caching what it read before the write.
type roleCache struct {
	mu         sync.RWMutex
	roles      map[string]*roleEntry
	generation uint64
}

func newRoleCache() *roleCache {
	return &roleCache{roles: map[string]*roleEntry{}}
}

// get returns the role from memory, or reads it from storage and keeps it.
// A missing role is not cached: creating it must take effect at once. The
// returned role is shared and must not be changed.
func (c *roleCache) get(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	c.mu.RLock()
	role, ok := c.roles[name]
	generation := c.generation
	c.mu.RUnlock()
	if ok {
		return role, nil
	}
	role, err := getRole(ctx, s, name)
	if err != nil || role == nil {
		return role, err
	}
	c.mu.Lock()
	if c.generation == generation {
		c.roles[name] = role
	}
	c.mu.Unlock()
	return role, nil
}

// invalidate drops one role.
func (c *roleCache) invalidate(name string) {
	c.mu.Lock()
	delete(c.roles, name)
	c.generation++
	c.mu.Unlock()
}

// reset drops every role.
func (c *roleCache) reset() {
	c.mu.Lock()
	c.roles = map[string]*roleEntry{}
	c.generation++
	c.mu.Unlock()
}
