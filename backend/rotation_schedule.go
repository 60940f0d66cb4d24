package backend

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// When the plugin rotates its own credential by itself: per-cluster
// backoff, timers, and the periodic run on the active node.

// rotationState is the in-memory part of automatic rotation: per cluster,
// how often it failed in a row and when to try again.
type rotationState struct {
	mu      sync.Mutex
	backoff map[string]rotationBackoff
	timers  map[*time.Timer]struct{}
	closed  bool
}

type rotationBackoff struct {
	failures int
	next     time.Time
}

func newRotationState() *rotationState {
	return &rotationState{backoff: map[string]rotationBackoff{}, timers: map[*time.Timer]struct{}{}}
}

func (r *rotationState) ready(name string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !now.Before(r.backoff[name].next)
}

// failed records a failure and returns when to try again: a minute after
// the first, doubling up to maxRotationBackoff, and never later than a
// quarter of the credential's remaining life.
func (r *rotationState) failed(name string, now, expiresAt time.Time) (int, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.backoff[name]
	st.failures++
	delay := maxRotationBackoff
	if st.failures < 5 {
		delay = min(time.Minute<<(st.failures-1), maxRotationBackoff)
	}
	if !expiresAt.IsZero() {
		delay = min(delay, max(expiresAt.Sub(now)/4, 0))
	}
	st.next = now.Add(delay - rotationDueSlack)
	r.backoff[name] = st
	return st.failures, st.next
}

func (r *rotationState) reset(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.backoff, name)
}

// after runs f after d unless the backend is cleaned up first.
func (r *rotationState) after(d time.Duration, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		r.mu.Lock()
		_, live := r.timers[t]
		delete(r.timers, t)
		r.mu.Unlock()
		if live {
			f()
		}
	})
	r.timers[t] = struct{}{}
}

func (r *rotationState) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for t := range r.timers {
		t.Stop()
	}
	r.timers = map[*time.Timer]struct{}{}
}

// rotationDue reports whether automatic rotation should run now: never
// rotated (a credential the operator wrote), rotation_period passed since
// the last rotation, or the credential about to expire.
func rotationDue(cfg *clusterConfig, now time.Time) bool {
	if cfg.RotationPeriod == 0 || cfg.inCluster() {
		return false
	}
	if cfg.LastRotatedAt.IsZero() || now.Sub(cfg.LastRotatedAt) >= cfg.RotationPeriod-rotationDueSlack {
		return true
	}
	return !cfg.JWTExpiresAt.IsZero() && cfg.JWTExpiresAt.Sub(now) < rotationMargin
}

// periodicRotation runs from periodic on the active node: it deletes the
// Secrets of replaced credentials whose grace has passed and rotates every
// cluster whose rotation is due, backing off per cluster after failures.
func (b *backend) periodicRotation(ctx context.Context, s logical.Storage, now time.Time) {
	names, err := s.List(ctx, clusterStoragePrefix)
	if err != nil {
		b.Logger().Warn("automatic rotation: listing clusters", "error", err)
		return
	}
	for _, name := range names {
		cfg, err := getCluster(ctx, s, name)
		if err != nil || cfg == nil {
			continue
		}
		if len(cfg.PendingDeletion) > 0 {
			if err := b.deletePendingSecrets(ctx, s, name, now); err != nil {
				b.Logger().Warn("deleting the Secrets of replaced credentials; retrying at the next periodic run", "cluster", name, "error", err)
			}
		}
		if !rotationDue(cfg, now) || !b.rotation.ready(name, now) {
			continue
		}
		if _, err := b.rotateRoot(ctx, s, name, now); err != nil {
			failures, next := b.rotation.failed(name, now, cfg.JWTExpiresAt)
			b.Logger().Warn("automatic rotation of the plugin's own credential failed; the old credential stays in use", "cluster", name,
				"failures", failures, "next_attempt", next.UTC().Format(time.RFC3339), "credential_id", cfg.JWTCredentialID, "error", err)
			b.warnExpiring(name, cfg, now)
			continue
		}
		b.rotation.reset(name)
	}
}

// warnExpiring warns when the stored credential, which rotation failed to
// replace, expires within rotation_period plus the margin.
func (b *backend) warnExpiring(name string, cfg *clusterConfig, now time.Time) {
	if cfg.JWTExpiresAt.IsZero() {
		return
	}
	left := cfg.JWTExpiresAt.Sub(now)
	switch {
	case left <= 0:
		b.Logger().Error("the plugin's own credential has expired and rotation keeps failing: write clusters/"+name+" with a new service_account_jwt", "cluster", name,
			"credential_id", cfg.JWTCredentialID, "expired_at", cfg.JWTExpiresAt.Format(time.RFC3339))
	case left < cfg.RotationPeriod+rotationMargin:
		b.Logger().Warn("the plugin's own credential expires soon and rotation keeps failing: see last_rotation_error in clusters/"+name+" and clusters/"+name+"/check", "cluster", name,
			"credential_id", cfg.JWTCredentialID, "expires_at", cfg.JWTExpiresAt.Format(time.RFC3339), "expires_in", left.Truncate(time.Second).String())
	}
}
