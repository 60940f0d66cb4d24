package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// The plugin rotates its own token-requester credential: with the current
// one it requests a token for its own service account, bound to a new
// per-rotation Secret in that account's namespace; it checks that the new
// token authenticates as that account, stores it, switches its client, and
// after a grace deletes the previous rotation's Secret, which kills the
// previous token. A token the operator wrote is left alone.
const (
	minRotationPeriod = time.Minute
	// minJWTTTL is TokenRequest's own minimum.
	minJWTTTL = 10 * time.Minute
	// rotationMargin is how much longer than rotation_period the credential
	// must live, so failed rotations can be retried before it expires.
	rotationMargin = 5 * time.Minute
	// defaultRotationGrace lets in-flight requests and standbys switch to
	// the new credential before the previous one is killed.
	defaultRotationGrace = 30 * time.Second
	// maxRotationBackoff bounds the wait between failed automatic rotations.
	maxRotationBackoff = 10 * time.Minute
	// rotationDueSlack lets a rotation due "a minute after the last" run at
	// the next periodic call even when that comes a little early.
	rotationDueSlack = 10 * time.Second

	rotationSecretPrefix = "vault-scanner-root-"
	purposeAnnotation    = annotationPrefix + "purpose"
	purposeRotation      = "rotate-root"
	// walRotationKind names a rotation's new Secret, from before its
	// create until the new credential is stored; rollback deletes it (and
	// so the token bound to it) unless an endpoint holds it.
	walRotationKind = "rotation_secret"
	// maxStoredErrorLength bounds last_rotation_error.
	maxStoredErrorLength = 500
)

// pendingSecret is the Secret of a replaced credential, to be deleted once
// DeleteAfter has passed, on the endpoint that holds it.
type pendingSecret struct {
	Ref          objectRef `json:"ref"`
	Endpoint     string    `json:"endpoint"`
	CredentialID string    `json:"credential_id,omitempty"`
	DeleteAfter  time.Time `json:"delete_after"`
	// ExpiresAt is when the replaced credential expires by itself.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// expiresAt is when the replaced credential expires by itself. Entries from
// before that was recorded are estimated from cfg, the configuration that
// rotated to it: it was issued before it was replaced, for at most the
// lifetime rotation asks for.
func (p pendingSecret) expiresAt(cfg *clusterConfig) time.Time {
	if !p.ExpiresAt.IsZero() {
		return p.ExpiresAt
	}
	return p.DeleteAfter.Add(cfg.effectiveJWTTTL())
}

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

// effectiveJWTTTL is the lifetime rotation asks for: service_account_jwt_ttl,
// or twice rotation_period and at least 10 minutes.
func (c *clusterConfig) effectiveJWTTTL() time.Duration {
	if c.JWTTTL > 0 {
		return c.JWTTTL
	}
	return max(2*c.RotationPeriod, minJWTTTL)
}

// validateRotation checks rotation_period and service_account_jwt_ttl.
func validateRotation(c *clusterConfig) error {
	if c.RotationPeriod < 0 || (c.RotationPeriod > 0 && c.RotationPeriod < minRotationPeriod) || c.RotationPeriod > maxTokenLifetime {
		return fmt.Errorf("rotation_period must be 0 (rotate only on rotate-root) or between %s and %s", minRotationPeriod, maxTokenLifetime)
	}
	if c.JWTTTL < 0 || (c.JWTTTL > 0 && c.JWTTTL < minJWTTTL) || c.JWTTTL > maxTokenLifetime {
		return fmt.Errorf("service_account_jwt_ttl must be 0 (the default: twice rotation_period, at least %s) or between %s (Kubernetes' TokenRequest minimum) and %s", minJWTTTL, minJWTTTL, maxTokenLifetime)
	}
	if ttl := c.effectiveJWTTTL(); ttl > maxTokenLifetime {
		return fmt.Errorf("the credential lifetime (service_account_jwt_ttl, by default twice rotation_period) would be %d s, longer than Kubernetes' TokenRequest allows (%d s): set a shorter rotation_period or an explicit service_account_jwt_ttl", int64(ttl/time.Second), int64(maxTokenLifetime/time.Second))
	}
	if c.RotationPeriod > 0 && c.effectiveJWTTTL() < c.RotationPeriod+rotationMargin {
		return fmt.Errorf("service_account_jwt_ttl (%s) must be at least rotation_period (%s) plus %s, so that a failed rotation can be retried before the credential expires", c.effectiveJWTTTL(), c.RotationPeriod, rotationMargin)
	}
	if c.inCluster() && (c.RotationPeriod > 0 || c.JWTTTL > 0) {
		return errors.New("rotation_period and service_account_jwt_ttl need a stored service_account_jwt: without one the plugin uses the pod's own token, which the kubelet rotates")
	}
	return nil
}

// noteNewJWT records what the claims of a JWT the operator wrote say (its
// credential id and expiry) and forgets the previous rotation's state. The
// previous rotation's Secret, if any, is scheduled for deletion when the
// endpoint stays the same; after a re-point the retired endpoint still
// needs that credential to revoke its leases, and it dies at its expiry.
func noteNewJWT(cfg, old *clusterConfig, grace time.Duration, now time.Time) {
	cfg.JWTCredentialID, cfg.JWTExpiresAt = "", time.Time{}
	if claims, err := parseTokenClaims(cfg.JWT); err == nil {
		cfg.JWTCredentialID, cfg.JWTExpiresAt = credentialID(claims.JTI), claims.expiresAt()
	}
	cfg.RotatedSecret, cfg.LastRotatedAt, cfg.LastRotationError = nil, time.Time{}, ""
	if old != nil && old.RotatedSecret != nil && old.endpointID() == cfg.endpointID() {
		cfg.PendingDeletion = append(slices.Clone(old.PendingDeletion), pendingSecret{
			Ref: *old.RotatedSecret, Endpoint: old.endpointID(), CredentialID: old.JWTCredentialID, DeleteAfter: now.Add(grace).UTC(), ExpiresAt: old.JWTExpiresAt,
		})
	}
}

func pathRotateRoot(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "clusters/" + namePathPattern + "/rotate-root$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "cluster-root",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeString, Description: "Name of the cluster.", Required: true},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.rotateRootHandler,
				Summary:                     "Replace the plugin's own credential with a fresh token for the same service account.",
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "rotate"},
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis: "Rotate the plugin's own token-requester credential.",
		HelpDescription: `
With the stored credential, requests a token for the plugin's own service
account (named by the stored JWT's claims), bound to a new Secret in that
account's namespace and valid for service_account_jwt_ttl; checks that it
authenticates; stores it; and after a short grace deletes the Secret of the
previous rotation, which kills the previous token. A token the plugin did not
create is left to the operator. The response carries the new credential's
credential_id and expires_at, never the token.
`,
	}
}

func (b *backend) rotateRootHandler(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(d); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	name := d.Get("name").(string)
	if err := validateVaultName("cluster", name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	res, err := b.rotateRoot(ctx, req.Storage, name, time.Now())
	if err != nil {
		return respond(name, nil, err)
	}
	b.rotation.reset(name)
	resp := &logical.Response{Data: res.data()}
	resp.Warnings = res.warnings
	return resp, nil
}

// rotationResult is what one rotation did; it never holds a token.
type rotationResult struct {
	credentialID   string
	expiresAt      time.Time
	serviceAccount string
	secret         objectRef
	previous       *pendingSecret
	warnings       []string
}

func (r *rotationResult) data() map[string]interface{} {
	data := map[string]interface{}{
		"credential_id":   r.credentialID,
		"expires_at":      r.expiresAt.UTC().Format(time.RFC3339),
		"service_account": r.serviceAccount,
		"bound_secret":    r.secret.Namespace + "/" + r.secret.Name,
	}
	if r.previous != nil {
		data["previous_credential_id"] = r.previous.CredentialID
		data["previous_secret_deleted_after"] = r.previous.DeleteAfter.UTC().Format(time.RFC3339)
	}
	return data
}

// rotateRoot rotates cluster name's stored credential. Errors a caller must
// fix (userError) change nothing; other failures keep the old credential and
// are recorded in last_rotation_error.
func (b *backend) rotateRoot(ctx context.Context, s logical.Storage, name string, now time.Time) (*rotationResult, error) {
	b.clusterLock.Lock()
	defer b.clusterLock.Unlock()
	res, err := b.rotateLocked(ctx, s, name, now)
	if err == nil {
		return res, nil
	}
	var user userError
	var notFound errClusterNotFound
	if errors.As(err, &user) || errors.As(err, &notFound) {
		return nil, err
	}
	b.recordRotationError(ctx, s, name, err)
	return nil, err
}

func (b *backend) recordRotationError(ctx context.Context, s logical.Storage, name string, cause error) {
	ctx, cancel := b.cleanupContext(ctx)
	defer cancel()
	cfg, err := getCluster(ctx, s, name)
	if err != nil || cfg == nil {
		return
	}
	msg := cause.Error()
	if len(msg) > maxStoredErrorLength {
		msg = strings.ToValidUTF8(msg[:maxStoredErrorLength], "") + "…"
	}
	cfg.LastRotationError = time.Now().UTC().Format(time.RFC3339) + ": " + msg
	if err := putCluster(ctx, s, name, cfg); err != nil {
		b.Logger().Warn("recording a failed rotation", "cluster", name, "error", err)
	}
}

func (b *backend) rotateLocked(ctx context.Context, s logical.Storage, name string, now time.Time) (*rotationResult, error) {
	cfg, err := getCluster(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errClusterNotFound{name: name}
	}
	if cfg.inCluster() {
		return nil, userError{fmt.Errorf("cluster %q has no stored service_account_jwt: the plugin uses the pod's own token, which the kubelet rotates; there is nothing to rotate", name)}
	}
	claims, err := parseTokenClaims(cfg.JWT)
	ns, sa, ok := claims.serviceAccount()
	if err != nil || !ok {
		return nil, userError{fmt.Errorf("the stored service_account_jwt of cluster %q carries no service-account claims (kubernetes.io serviceaccount, or sub system:serviceaccount:<namespace>:<name>), so the plugin cannot tell which service account to rotate: write a service-account token (kubectl create token) first", name)}
	}
	client, err := b.client(ctx, s, name)
	if err != nil {
		return nil, err
	}
	ttl := cfg.effectiveJWTTTL()
	issueID := randomString(20)
	secret := rotationSecret(name, ns, now.Add(ttl), issueID)
	planned := objectRef{Kind: kindSecret, Namespace: ns, Name: secret.Name}
	// Marked before the WAL entry: rollback deletes it only if the mark
	// proves it the plugin's.
	if err := b.markOwned(ctx, s, kindSecret, secret); err != nil {
		return nil, err
	}
	// The WAL entry comes before the create, as for an ephemeral lease: a
	// crash at any point after leaves a Secret that rollback finds. It names
	// the planned Secret without a UID, so rollback deletes it only if it
	// carries this rotation's issue ID.
	walID, err := framework.PutWAL(ctx, s, walRotationKind, &walEntry{
		Cluster: name, Endpoint: cfg.endpointID(), IssueID: issueID, CreatedAt: now.UTC(), Objects: []objectRef{planned},
	})
	if err != nil {
		return nil, fmt.Errorf("writing WAL entry: %w", err)
	}
	ref, err := client.api.CreateObject(ctx, kindSecret, secret)
	if err != nil {
		cause := fmt.Errorf("creating the rotation Secret %s: %w", planned, err)
		if !createOutcomeUnknown(err) {
			// The API server refused the create: nothing to delete.
			return nil, b.undoRotation(ctx, s, client, objectRef{}, issueID, walID, cause)
		}
		return nil, b.undoRotation(ctx, s, client, planned, issueID, walID, cause)
	}
	// Rollback of a Secret known only by name needs get, which the shipped
	// RBAC does not grant: before the token is bound to it, an entry with
	// its UID replaces the planned one.
	recorded, err := framework.PutWAL(ctx, s, walRotationKind, &walEntry{
		Cluster: name, Endpoint: cfg.endpointID(), IssueID: issueID, CreatedAt: now.UTC(), Objects: []objectRef{ref},
	})
	if err != nil {
		return nil, b.undoRotation(ctx, s, client, ref, issueID, walID, fmt.Errorf("writing WAL entry: %w", err))
	}
	b.deleteWAL(ctx, s, walID)
	walID = recorded

	secs := int64(ttl / time.Second)
	tr, err := client.api.CreateToken(ctx, ns, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &secs,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: kindSecret, APIVersion: "v1", Name: ref.Name, UID: ref.UID},
	}})
	if err != nil {
		return nil, b.undoRotation(ctx, s, client, ref, issueID, walID, fmt.Errorf("requesting a token for the plugin's own service account %s/%s: %w", ns, sa, err))
	}
	newClaims, err := usableRotatedToken(tr.Status.Token, ns, sa)
	if err != nil {
		return nil, b.undoRotation(ctx, s, client, ref, issueID, walID, err)
	}
	if err := b.verifyCredential(ctx, client, tr.Status.Token, ns, sa); err != nil {
		return nil, b.undoRotation(ctx, s, client, ref, issueID, walID, err)
	}

	next := *cfg
	next.JWT = tr.Status.Token
	next.JWTCredentialID = credentialID(newClaims.JTI)
	next.JWTExpiresAt = tr.Status.ExpirationTimestamp.UTC()
	next.RotatedSecret = &ref
	next.LastRotatedAt = now.UTC()
	next.LastRotationError = ""
	next.PendingDeletion = slices.Clone(cfg.PendingDeletion)
	res := &rotationResult{
		credentialID: next.JWTCredentialID, expiresAt: next.JWTExpiresAt,
		serviceAccount: ns + "/" + sa, secret: ref,
	}
	if cfg.RotatedSecret != nil {
		prev := pendingSecret{Ref: *cfg.RotatedSecret, Endpoint: cfg.endpointID(), CredentialID: cfg.JWTCredentialID, DeleteAfter: now.Add(b.rotationGrace).UTC(), ExpiresAt: cfg.JWTExpiresAt}
		next.PendingDeletion = append(next.PendingDeletion, prev)
		res.previous = &prev
	} else {
		msg := "the previous credential was not created by the plugin and is left to the operator"
		if cfg.JWTCredentialID != "" {
			msg += fmt.Sprintf(" (credential_id %s", cfg.JWTCredentialID)
			if !cfg.JWTExpiresAt.IsZero() {
				msg += ", expires at " + cfg.JWTExpiresAt.Format(time.RFC3339)
			}
			msg += ")"
		}
		res.warnings = append(res.warnings, msg+": it stays valid until it expires unless you revoke it (use a short-lived bootstrap token)")
	}
	if err := putCluster(ctx, s, name, &next); err != nil {
		return nil, b.undoRotation(ctx, s, client, ref, issueID, walID, err)
	}
	b.dropCachedClient(name)
	// Should this delete fail, rollback finds the Secret held by the
	// cluster entry and leaves it alone.
	b.deleteWAL(ctx, s, walID)

	if left := next.JWTExpiresAt.Sub(now); left < ttl-expiryTolerance {
		res.warnings = append(res.warnings, fmt.Sprintf("the API server shortened the credential to %s (asked for %s)", left.Truncate(time.Second), ttl))
	}
	if cfg.RotationPeriod == 0 {
		res.warnings = append(res.warnings, fmt.Sprintf("rotation_period is 0: rotate again before the credential expires at %s, or set rotation_period", next.JWTExpiresAt.Format(time.RFC3339)))
	}
	args := []interface{}{"cluster", name, "service_account", res.serviceAccount, "credential_id", res.credentialID,
		"expires_at", res.expiresAt.Format(time.RFC3339), "bound_secret", ns + "/" + ref.Name}
	if res.previous != nil {
		args = append(args, "previous_credential_id", res.previous.CredentialID, "previous_secret_deleted_after", res.previous.DeleteAfter.Format(time.RFC3339))
		b.rotation.after(b.rotationGrace, func() { b.deletePendingAfterGrace(s, name) })
	} else {
		args = append(args, "previous_credential_id", cfg.JWTCredentialID, "previous_credential", "not created by the plugin: left to the operator")
	}
	b.Logger().Info("rotated the plugin's own credential", args...)
	return res, nil
}

// rotationSecret is the object a rotated credential is bound to. It is
// labelled like the per-lease Secrets, so tidy removes it after expiresAt.
func rotationSecret(cluster, namespace string, expiresAt time.Time, issueID string) *corev1.Secret {
	return emptySecret(metav1.ObjectMeta{
		Name:      rotationSecretPrefix + randomString(16),
		Namespace: namespace,
		Labels:    map[string]string{managedByLabel: managedByValue},
		Annotations: map[string]string{
			purposeAnnotation:   purposeRotation,
			clusterAnnotation:   cluster,
			expiresAtAnnotation: expiresAt.UTC().Format(time.RFC3339),
			issueAnnotation:     issueID,
		},
	})
}

// undoRotation ends a failed rotation and returns cause: it deletes the new
// Secret (killing any token bound to it), by UID once created, or, when the
// create's outcome is unknown (ref without UID), only if it carries the
// rotation's issue ID; a zero ref means nothing was created. Only then does
// it drop the WAL entry: while the Secret may exist, the entry stays so
// rollback retries.
func (b *backend) undoRotation(ctx context.Context, s logical.Storage, client *clusterClient, ref objectRef, issueID, walID string, cause error) error {
	ctx, cancel := b.cleanupContext(ctx)
	defer cancel()
	if ref != (objectRef{}) {
		if err := b.deleteIfFromIssue(ctx, s, client.api, ref, issueID); err != nil {
			b.Logger().Error("could not delete the Secret of a failed rotation; rollback will retry", "cluster", client.cluster, "secret", ref.String(), "error", err)
			return cause
		}
	}
	b.deleteWAL(ctx, s, walID)
	return cause
}

// usableRotatedToken parses the token a rotation's TokenRequest returned.
// An answer that is no JWT, or names another service account, is the API
// server's failure (502): the plugin cannot use it as its credential.
func usableRotatedToken(token, ns, sa string) (tokenClaims, error) {
	if token == "" {
		return tokenClaims{}, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("the API server answered the TokenRequest for the plugin's own service account %s/%s without a token", ns, sa)}
	}
	claims, err := parseTokenClaims(token)
	if err != nil {
		return tokenClaims{}, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("the API server's answer to the TokenRequest for the plugin's own service account %s/%s is unusable: %v", ns, sa, err)}
	}
	if gotNS, gotSA, ok := claims.serviceAccount(); ok && (gotNS != ns || gotSA != sa) {
		return tokenClaims{}, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("the API server answered the TokenRequest for the plugin's own service account %s/%s with a token for %s/%s", ns, sa, truncateForMessage(gotNS), truncateForMessage(gotSA))}
	}
	return claims, nil
}

// verifyCredential checks that token authenticates, as the service account
// it was issued for, on the cluster's endpoint.
func (b *backend) verifyCredential(ctx context.Context, client *clusterClient, token, ns, sa string) error {
	rc := rest.CopyConfig(client.endpoint.restConfig)
	rc.BearerToken, rc.BearerTokenFile = token, ""
	api, err := b.newKubeAPI(rc)
	if err != nil {
		return fmt.Errorf("building a client for the new credential: %w", err)
	}
	user, err := api.WhoAmI(ctx)
	if err != nil {
		return fmt.Errorf("the new credential does not authenticate: %w", err)
	}
	if want := "system:serviceaccount:" + ns + ":" + sa; user != want {
		// Storing it would hand the plugin another identity.
		return &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("the new credential authenticates as %q, not as %q: the API server's answer is unusable", truncateForMessage(user), want)}
	}
	return nil
}

// maxEchoedLength bounds what an error repeats of an API server's answer.
const maxEchoedLength = 256

// truncateForMessage cuts v, which an API server chose, for an error.
func truncateForMessage(v string) string {
	if len(v) <= maxEchoedLength {
		return v
	}
	return strings.ToValidUTF8(v[:maxEchoedLength], "") + "…"
}

// deletePendingAfterGrace is the timer's half of deleting replaced
// credentials; the periodic function is the other, for a process that died
// before its timer fired.
func (b *backend) deletePendingAfterGrace(s logical.Storage, name string) {
	if !b.writesHere() {
		// This node lost the right to write since the timer was set: the
		// active node's periodic run deletes them.
		b.Logger().Debug("replaced credentials are left to the active node", "cluster", name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.requestTimeout)
	defer cancel()
	if err := b.deletePendingSecrets(ctx, s, name, time.Now()); err != nil {
		b.Logger().Warn("deleting the Secrets of replaced credentials; the next periodic run retries", "cluster", name, "error", err)
	}
}

// deletePendingSecrets deletes, by UID, the Secrets of replaced credentials
// whose grace has passed, and keeps the others (and failures) in storage.
func (b *backend) deletePendingSecrets(ctx context.Context, s logical.Storage, name string, now time.Time) error {
	b.clusterLock.Lock()
	defer b.clusterLock.Unlock()
	cfg, err := getCluster(ctx, s, name)
	if err != nil || cfg == nil || len(cfg.PendingDeletion) == 0 {
		return err
	}
	var keep []pendingSecret
	var errs []error
	for _, p := range cfg.PendingDeletion {
		if now.Before(p.DeleteAfter) {
			keep = append(keep, p)
			continue
		}
		client, err := b.endpointClient(ctx, s, name, p.Endpoint)
		if err == nil {
			err = client.api.DeleteObject(ctx, p.Ref)
		}
		if err != nil {
			keep = append(keep, p)
			errs = append(errs, fmt.Errorf("%s: %w", p.Ref, err))
			continue
		}
		b.Logger().Info("deleted the Secret of a replaced credential; that credential no longer works", "cluster", name, "credential_id", p.CredentialID, "secret", p.Ref.String())
	}
	if len(keep) != len(cfg.PendingDeletion) {
		cfg.PendingDeletion = keep
		if err := putCluster(ctx, s, name, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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

// rollbackRotation deletes the Secret of a rotation that never got stored.
// A Secret that any endpoint of the cluster holds (current or retired, as
// its credential or pending deletion) was stored after all, only the WAL
// delete failed: it is left alone, else that endpoint's leases could no
// longer be revoked. The cluster lock keeps a write from moving a
// credential between the check and the delete.
func (b *backend) rollbackRotation(ctx context.Context, s logical.Storage, entry *walEntry) error {
	b.clusterLock.Lock()
	defer b.clusterLock.Unlock()
	held, err := heldRotationSecrets(ctx, s, entry.Cluster)
	if err != nil {
		return err
	}
	entry.Objects = slices.DeleteFunc(slices.Clone(entry.Objects), func(ref objectRef) bool {
		return slices.ContainsFunc(held, func(h objectRef) bool { return sameObject(h, ref) })
	})
	if len(entry.Objects) == 0 {
		return nil
	}
	return b.rollbackEntry(ctx, s, entry)
}

// heldRotationSecrets are the Secrets that credentials stored for cluster
// are bound to: the current entry's and every retired endpoint's rotated
// credential and pending deletions.
func heldRotationSecrets(ctx context.Context, s logical.Storage, cluster string) ([]objectRef, error) {
	cfg, err := getCluster(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	retired, err := listRetiredEndpoints(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	configs := make([]*clusterConfig, 0, len(retired)+1)
	if cfg != nil {
		configs = append(configs, cfg)
	}
	for _, r := range retired {
		configs = append(configs, &r.Config)
	}
	var held []objectRef
	for _, c := range configs {
		if c.RotatedSecret != nil {
			held = append(held, *c.RotatedSecret)
		}
		for _, p := range c.PendingDeletion {
			held = append(held, p.Ref)
		}
	}
	return held, nil
}

// sameObject says whether ref, possibly known only by name (a create whose
// outcome was unknown), may be the object held.
func sameObject(held, ref objectRef) bool {
	if ref.UID != "" && held.UID == ref.UID {
		return true
	}
	return held.Kind == ref.Kind && held.Namespace == ref.Namespace && held.Name == ref.Name
}
