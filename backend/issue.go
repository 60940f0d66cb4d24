package backend

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
)

// One issue, from a validated request to a committed lease or a rollback:
// the request (issueRequest), then the transaction (issueTxn), which
// rotation uses too.

// issueRequest is a validated request for one credential.
type issueRequest struct {
	roleName  string
	role      *roleEntry
	ttl       time.Duration
	audiences []string
	warnings  []string
	// namespace holds the service account: the role's, or for ephemeral
	// roles the requested one once checked.
	namespace string
	// namespaces are those of kubernetes_namespaces (the first is
	// namespace); nil when the parameter was not used.
	namespaces         []string
	clusterRoleBinding bool
	// targets are the pods a target-scoped lease names, resolved (creds/
	// only); their namespaces are namespaces, the first is namespace.
	targets []podTarget
}

// leaseNamespaces are the namespaces an ephemeral lease binds in.
func (ir *issueRequest) leaseNamespaces() []string {
	if len(ir.namespaces) > 0 {
		return ir.namespaces
	}
	return []string{ir.namespace}
}

// parseIssueRequest validates the request against the role; its errors are
// the caller's to fix.
func parseIssueRequest(name string, role *roleEntry, d *framework.FieldData, mountMax time.Duration) (*issueRequest, error) {
	ir := &issueRequest{roleName: name, role: role, ttl: role.TTL, audiences: role.Audiences, namespace: role.ServiceAccountNamespace}
	crb, err := parseScopeParams(name, role, d)
	if err != nil {
		return nil, err
	}
	ir.clusterRoleBinding = crb
	if err := parseTargetParams(name, role, d); err != nil {
		return nil, err
	}

	if v, ok := d.GetOk("ttl"); ok {
		// The framework already refuses negative durations with a 400.
		if requested := time.Duration(v.(int)) * time.Second; requested > 0 {
			ir.ttl = requested
		}
	}
	if ir.ttl > role.MaxTTL {
		ir.warnings = append(ir.warnings, fmt.Sprintf("ttl %s is above the role's max_ttl; capped at %s", ir.ttl, role.MaxTTL))
		ir.ttl = role.MaxTTL
	}
	if mountMax > 0 && ir.ttl > mountMax {
		ir.warnings = append(ir.warnings, fmt.Sprintf("ttl %s is above the mount's max lease TTL; capped at %s", ir.ttl, mountMax))
		ir.ttl = mountMax
	}

	if v, ok := d.GetOk("audiences"); ok {
		requested := v.([]string)
		if err := validateAudiences(requested); err != nil {
			return nil, err
		}
		// An audience is a grant: other systems accept tokens by it.
		if len(requested) > 0 && len(role.Audiences) == 0 {
			return nil, fmt.Errorf("role %q lists no audiences, so its tokens are for the Kubernetes API server only; an operator may allow others with the role's audiences", name)
		}
		for _, a := range requested {
			if !slices.Contains(role.Audiences, a) {
				return nil, fmt.Errorf("audience %q is not allowed by role %q (allowed: %s)", clip(a), name, strings.Join(role.Audiences, ", "))
			}
		}
		if len(requested) > 0 {
			ir.audiences = requested
		}
	}
	return ir, nil
}

// tokenExpirySkew keeps the lease ending before the token does, so Vault,
// not the JWT's exp, decides when a credential stops working.
const tokenExpirySkew = 30 * time.Second

// expiryTolerance is how much shorter than asked a token may come back
// before the lease is shortened to match.
const expiryTolerance = 5 * time.Second

// revocableCheckTTL is how long a positive "may delete" answer is trusted.
const revocableCheckTTL = time.Minute

// tokenExpirationSeconds is what the plugin asks TokenRequest for: the lease
// plus a margin, and never below Kubernetes' 10-minute minimum. Shorter
// leases are enforced by deleting the bound Secret.
func tokenExpirationSeconds(ttl time.Duration) int64 {
	const minimum = 600
	s := int64(math.Ceil((ttl + tokenExpirySkew).Seconds()))
	if s < minimum {
		return minimum
	}
	return s
}

// issueTxn is one issue of a token, for a lease or for the plugin's own
// credential (rotation), from plan to commit or rollback:
//
//   - plan: the objects to create, each marked with the issue's ID, the WAL
//     kind and when the entry is written, what the token is bound to and
//     asked for, checks, and the commit step;
//   - checks, then a WAL entry before anything that can grant access exists;
//   - create, token, commit, drop the WAL entry;
//   - or roll back: delete what was created, resolve creates whose outcome
//     is unknown, and leave a WAL entry for whatever could not be removed.
type issueTxn struct {
	b       *backend
	storage logical.Storage
	client  *clusterClient
	started time.Time

	objects []plannedObject
	walKind string
	// walFirst writes the WAL entry before the first create, naming the
	// planned objects; a crash at any point after leaves nothing unnamed.
	walFirst bool
	// bindToken binds the token to objects[0], a Secret; otherwise
	// objects[0] is the ServiceAccount itself. The WAL entry then names
	// that Secret by UID before the token exists.
	bindToken         bool
	audiences         []string
	expirationSeconds int64
	// check runs before anything exists; nil for none.
	check func(context.Context) error
	// commit makes the issue take effect; an error rolls it back.
	commit func(context.Context, *issuedToken) error
	// committedIsHeld: once committed, what the WAL entry names is held
	// where its rollback spares it, so a WAL entry left behind is harmless.
	committedIsHeld bool

	record leaseRecord
	walID  string
	// unknown are objects whose create failed in a way that does not say
	// whether the API server stored them.
	unknown []objectRef
}

// issuedToken is the API server's answer to the TokenRequest, a JWT.
type issuedToken struct {
	token  string
	claims tokenClaims
	// expiresAt is the token's expiry as the API server states it.
	expiresAt time.Time
}

// run carries the issue through to its commit, or rolls it back.
func (t *issueTxn) run(ctx context.Context) error {
	// Without the key the objects could not be marked, and tidy or rollback
	// could never prove them the plugin's: fail before anything exists.
	if _, err := t.b.ownershipKey(ctx, t.storage); err != nil {
		return err
	}
	if t.check != nil {
		if err := t.check(ctx); err != nil {
			return err
		}
	}
	if t.walFirst {
		if err := t.writeWAL(ctx, t.plannedRefs()); err != nil {
			return err
		}
	}
	if err := t.createObjects(ctx); err != nil {
		return t.rollback(ctx, err)
	}
	if t.bindToken {
		// Rollback of an object known only by name needs get, which the
		// shipped RBAC may not grant.
		if err := t.writeWAL(ctx, t.record.Objects); err != nil {
			return t.rollback(ctx, err)
		}
	}
	tok, err := t.requestToken(ctx)
	if err != nil {
		return t.rollback(ctx, err)
	}
	if err := t.commit(ctx, tok); err != nil {
		return t.rollback(ctx, err)
	}
	if err := framework.DeleteWAL(ctx, t.storage, t.walID); err != nil {
		if t.committedIsHeld {
			t.b.Logger().Warn("deleting WAL entry", "id", t.walID, "error", err)
			return nil
		}
		// A WAL entry left behind would roll back a live lease.
		return t.rollback(ctx, fmt.Errorf("deleting WAL entry: %w", err))
	}
	t.walID = ""
	return nil
}

func (t *issueTxn) plannedRefs() []objectRef {
	refs := make([]objectRef, len(t.objects))
	for i, p := range t.objects {
		refs[i] = p.ref()
	}
	return refs
}

// writeWAL stores an entry naming refs; only once it is stored does it
// replace the previous one, which names a superset.
func (t *issueTxn) writeWAL(ctx context.Context, refs []objectRef) error {
	id, err := framework.PutWAL(ctx, t.storage, t.walKind, &walEntry{
		Cluster: t.record.Cluster, Endpoint: t.record.Endpoint, IssueID: t.record.IssueID,
		CreatedAt: t.started.UTC(), Objects: refs,
	})
	if err != nil {
		return fmt.Errorf("writing WAL entry: %w", err)
	}
	if t.walID != "" {
		t.b.deleteWAL(ctx, t.storage, t.walID)
	}
	t.walID = id
	return nil
}

func (t *issueTxn) createObjects(ctx context.Context) error {
	for i, p := range t.objects {
		if i > 0 {
			ownedBy(p.obj, t.record.Objects[0])
		}
		if err := t.b.markOwned(ctx, t.storage, p.kind, p.obj); err != nil {
			return err
		}
		ref, err := t.client.api.CreateObject(ctx, p.kind, p.obj)
		if err != nil {
			if createOutcomeUnknown(err) {
				t.unknown = append(t.unknown, p.ref())
			}
			return fmt.Errorf("creating %s: %w", p.ref(), err)
		}
		t.record.Objects = append(t.record.Objects, ref)
	}
	return nil
}

func (t *issueTxn) requestToken(ctx context.Context) (*issuedToken, error) {
	spec := authenticationv1.TokenRequestSpec{Audiences: t.audiences, ExpirationSeconds: &t.expirationSeconds}
	if t.bindToken {
		bound := t.record.Objects[0]
		spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: bound.Kind, APIVersion: "v1", Name: bound.Name, UID: bound.UID}
	}
	ns, saName := t.record.Namespace, t.record.ServiceAccount
	sa := ns + "/" + saName
	tr, err := t.client.api.CreateToken(ctx, ns, saName, &authenticationv1.TokenRequest{Spec: spec})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for service account %s: %w", sa, err)
	}
	if tr.Status.Token == "" {
		return nil, unusableAnswer("cluster %q: TokenRequest for %s returned no token", t.client.cluster, sa)
	}
	claims, err := parseTokenClaims(tr.Status.Token)
	if err != nil {
		return nil, unusableAnswer("cluster %q: TokenRequest for %s answered with something else than a JWT: %v", t.client.cluster, sa, err)
	}
	t.record.CredentialID = credentialID(claims.JTI)
	return &issuedToken{token: tr.Status.Token, claims: claims, expiresAt: tr.Status.ExpirationTimestamp.Time}, nil
}

// rollback undoes a failed issue and returns cause. What it cannot remove
// now stays covered by a WAL entry, so rollback retries it later.
func (t *issueTxn) rollback(ctx context.Context, cause error) error {
	ctx, cancel := t.b.cleanupContext(ctx)
	defer cancel()
	// Created objects carry their UID; those whose create's outcome is
	// unknown are deleted only if they prove to be this issue's.
	left := deleteInRevokeOrder(slices.Concat(t.record.Objects, t.unknown), func(ref objectRef) error {
		return t.b.deleteIfFromIssue(ctx, t.storage, t.client.api, ref, t.record.IssueID)
	})
	if len(left) == 0 {
		if t.walID != "" {
			t.b.deleteWAL(ctx, t.storage, t.walID)
		}
		return cause
	}
	t.b.Logger().Error("could not undo a failed issue; rollback will retry", "cluster", t.record.Cluster, "error", left.err())
	if err := t.writeWAL(ctx, left.refs()); err != nil {
		// The previous entry, if any, names a superset; it stays.
		t.b.Logger().Error("recording what a failed issue left", "objects", describeRefs(left.refs()), "error", err)
	}
	return cause
}

// leaseTxn is the issue of one lease: checked for grantable and revocable,
// committed by building the response and recording the lease's expiry.
type leaseTxn struct {
	txn *issueTxn
	ir  *issueRequest
}

// planLease writes the WAL entry before the first object for ephemeral
// roles; for a role's existing service account, once the per-lease Secret
// exists (so the entry holds its UID) and before the token is bound to it.
func (b *backend) planLease(req *logical.Request, client *clusterClient, ir *issueRequest) (*leaseTxn, error) {
	t := &issueTxn{
		b: b, storage: req.Storage, client: client, started: time.Now(),
		walKind: walObjectsKind, audiences: ir.audiences, expirationSeconds: tokenExpirationSeconds(ir.ttl),
	}
	l := &leaseTxn{txn: t, ir: ir}
	t.check = l.check
	lm := leaseMeta{roleName: ir.roleName, role: ir.role, expiresAt: t.started.Add(ir.ttl), issueID: randomString(20)}
	t.record = leaseRecord{
		Cluster: client.cluster, Endpoint: client.endpoint.ID, Role: ir.roleName,
		Namespace: ir.namespace, IssueID: lm.issueID,
	}
	if !ir.role.ephemeral() {
		t.objects = []plannedObject{{kindSecret, boundSecret(randomSecretName(), lm)}}
		t.bindToken = true
		t.record.ServiceAccount = ir.role.ServiceAccountName
		return l, nil
	}
	name, err := renderName(ir.role.nameTemplate(), nameTemplateData{RoleName: ir.roleName, DisplayName: req.DisplayName, Namespace: ir.namespace})
	if err != nil {
		return nil, userError{err}
	}
	if t.objects, err = ephemeralObjects(name, ir, lm); err != nil {
		return nil, err
	}
	t.walFirst = true
	t.record.ServiceAccount = name
	return l, nil
}

// run carries the lease through to a response, or rolls it back.
func (l *leaseTxn) run(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	var resp *logical.Response
	l.txn.commit = func(ctx context.Context, tok *issuedToken) error {
		cred, err := l.credential(tok)
		if err != nil {
			return err
		}
		if resp, err = l.txn.b.credentialResponse(req, l.ir, l.txn.client, cred); err != nil {
			return err
		}
		// The endpoint must be kept, should it be retired, until this lease
		// has expired: record that before the lease exists.
		return l.txn.client.recordLeaseHorizon(ctx, l.txn.storage, cred.expiresAt)
	}
	if err := l.txn.run(ctx); err != nil {
		return nil, err
	}
	return resp, nil
}

func (l *leaseTxn) check(ctx context.Context) error {
	t := l.txn
	if err := t.b.checkGrantable(ctx, t.storage, t.client, l.ir.roleName, l.ir.role, l.ir.leaseNamespaces()); err != nil {
		return err
	}
	return l.checkRevocable(ctx)
}

// checkRevocable refuses to issue a lease the plugin could not revoke: it
// asks the API server whether the plugin may delete every kind, in every
// namespace, the lease creates, and remembers a yes for a minute.
func (l *leaseTxn) checkRevocable(ctx context.Context) error {
	t := l.txn
	for _, p := range t.objects {
		k, err := lookupKind(p.kind)
		if err != nil {
			return err
		}
		ns := p.obj.GetNamespace()
		key := p.kind + "/" + ns
		if checked, ok := t.client.revocable.Load(key); ok && time.Since(checked.(time.Time)) < revocableCheckTTL {
			continue
		}
		allowed, err := t.client.api.Allowed(ctx, authorizationv1.ResourceAttributes{Verb: "delete", Group: k.group, Resource: k.resource, Namespace: ns})
		if err != nil {
			return fmt.Errorf("checking that the plugin may delete %s in namespace %q: %w", k.resource, ns, err)
		}
		if !allowed {
			perm := requiredPermission{attrs: authorizationv1.ResourceAttributes{Verb: "delete", Group: k.group, Resource: k.resource, Namespace: ns}}
			return &upstreamError{status: 502, msg: fmt.Sprintf("the plugin may not %s on cluster %q, so it could not revoke the lease; grant it (see deploy/) and verify with clusters/%s/check", perm, t.client.cluster, t.client.cluster)}
		}
		t.client.revocable.Store(key, time.Now())
	}
	return nil
}

// issuedCredential is a lease's token with the lease it allows.
type issuedCredential struct {
	token     string
	lease     leaseRecord
	leaseTTL  time.Duration
	expiresAt time.Time
	warnings  []string
}

func (l *leaseTxn) credential(tok *issuedToken) (*issuedCredential, error) {
	t := l.txn
	cred := &issuedCredential{token: tok.token, lease: t.record, leaseTTL: l.ir.ttl}
	// The API server may shorten the token (--service-account-max-token-expiration):
	// the lease must never outlive it. Its timestamp has whole seconds and
	// its clock may differ a little from ours, hence the tolerance; the skew
	// still keeps the lease well inside the token's life.
	tokenLeft := tok.expiresAt.Sub(t.started.Truncate(time.Second)) - tokenExpirySkew
	if tokenLeft < cred.leaseTTL-expiryTolerance {
		if tokenLeft <= 0 {
			return nil, fmt.Errorf("the API server issued a token for %s/%s that expires at once (%s)", t.record.Namespace, t.record.ServiceAccount, tok.expiresAt.UTC().Format(time.RFC3339))
		}
		cred.leaseTTL = tokenLeft.Truncate(time.Second)
		cred.warnings = append(cred.warnings, fmt.Sprintf("the API server shortened the token; lease capped at %s", cred.leaseTTL))
	}
	cred.expiresAt = t.started.Add(cred.leaseTTL).UTC()
	return cred, nil
}
