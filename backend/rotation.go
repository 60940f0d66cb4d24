package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
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
