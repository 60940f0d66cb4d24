package backend

import (
	"context"
	"errors"
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
// the request (issueRequest), then the transaction (leaseTxn).

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
	_, nsAsked := d.GetOk("kubernetes_namespace")
	_, nssAsked := d.GetOk("kubernetes_namespaces")
	crb, crbAsked := d.GetOk("cluster_role_binding")
	if !role.ephemeral() && (nsAsked || nssAsked || crbAsked) {
		return nil, fmt.Errorf("role %q uses the existing service account %s/%s: kubernetes_namespace, kubernetes_namespaces and cluster_role_binding do not apply", name, role.ServiceAccountNamespace, role.ServiceAccountName)
	}
	if nsAsked && nssAsked {
		return nil, errors.New("give kubernetes_namespace or kubernetes_namespaces, not both")
	}
	if crbAsked {
		if err := parseClusterRoleBinding(ir, crb.(bool)); err != nil {
			return nil, err
		}
	}
	if nssAsked && ir.clusterRoleBinding {
		return nil, errors.New("cluster_role_binding=true binds cluster-wide, so it already spans every namespace: drop kubernetes_namespaces, or drop cluster_role_binding to bind in each listed namespace")
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

func parseClusterRoleBinding(ir *issueRequest, asked bool) error {
	if !asked {
		return nil
	}
	if !ir.role.AllowClusterRoleBinding {
		return errors.New("cluster_role_binding is not allowed by this role (allow_cluster_role_binding)")
	}
	ir.clusterRoleBinding = true
	return nil
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

// leaseTxn is one issue, from plan to a committed lease or a rollback:
//
//   - plan: the objects to create, each labelled with the issue's ID;
//   - check: the plugin may delete every kind it creates (else it could not
//     revoke);
//   - WAL: stored before anything that can grant access exists: for
//     ephemeral roles before the first object; for a role's existing
//     service account after the per-lease Secret exists (so the entry
//     holds its UID) and before the token is bound to it;
//   - create, token, response;
//   - commit (record the lease's expiry in the endpoint's lease horizon,
//     drop the WAL entry) or roll back: delete what was created,
//     resolve creates whose outcome is unknown, and leave a WAL entry for
//     whatever could not be removed yet.
type leaseTxn struct {
	b       *backend
	storage logical.Storage
	client  *clusterClient
	ir      *issueRequest
	started time.Time

	objects []plannedObject
	// bindToken binds the token to objects[0] (the per-lease Secret);
	// otherwise objects[0] is the per-lease ServiceAccount itself.
	bindToken bool

	record leaseRecord
	walID  string
	// unknown are objects whose create failed in a way that does not say
	// whether the API server stored them.
	unknown []objectRef
}

func (b *backend) planLease(req *logical.Request, client *clusterClient, ir *issueRequest) (*leaseTxn, error) {
	t := &leaseTxn{b: b, storage: req.Storage, client: client, ir: ir, started: time.Now()}
	lm := leaseMeta{roleName: ir.roleName, role: ir.role, expiresAt: t.started.Add(ir.ttl), issueID: randomString(20)}
	t.record = leaseRecord{
		Cluster: client.cluster, Endpoint: client.endpoint.ID, Role: ir.roleName,
		Namespace: ir.namespace, IssueID: lm.issueID,
	}
	if !ir.role.ephemeral() {
		t.objects = []plannedObject{{kindSecret, boundSecret(randomSecretName(), lm)}}
		t.bindToken = true
		t.record.ServiceAccount = ir.role.ServiceAccountName
		return t, nil
	}
	name, err := renderName(ir.role.nameTemplate(), nameTemplateData{RoleName: ir.roleName, DisplayName: req.DisplayName, Namespace: ir.namespace})
	if err != nil {
		return nil, userError{err}
	}
	if t.objects, err = ephemeralObjects(name, ir, lm); err != nil {
		return nil, err
	}
	t.record.ServiceAccount = name
	return t, nil
}

// run carries the lease through to a response, or rolls it back.
func (t *leaseTxn) run(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	// Without the key the objects could not be marked, and tidy or rollback
	// could never prove them the plugin's: fail before anything exists.
	if _, err := t.b.ownershipKey(ctx, t.storage); err != nil {
		return nil, err
	}
	if err := t.b.checkGrantable(ctx, t.storage, t.client, t.ir.roleName, t.ir.role, t.ir.leaseNamespaces()); err != nil {
		return nil, err
	}
	if err := t.checkRevocable(ctx); err != nil {
		return nil, err
	}
	if !t.bindToken {
		if err := t.writeWAL(ctx, t.plannedRefs()); err != nil {
			return nil, err
		}
	}
	if err := t.createObjects(ctx); err != nil {
		return nil, t.rollback(ctx, err)
	}
	if t.bindToken {
		if err := t.writeWAL(ctx, t.record.Objects); err != nil {
			return nil, t.rollback(ctx, err)
		}
	}
	cred, err := t.requestToken(ctx)
	if err != nil {
		return nil, t.rollback(ctx, err)
	}
	resp, err := t.b.credentialResponse(req, t.ir, t.client, cred)
	if err != nil {
		return nil, t.rollback(ctx, err)
	}
	// The endpoint must be kept, should it be retired, until this lease
	// has expired: record that before the lease exists.
	if err := t.client.recordLeaseHorizon(ctx, t.storage, cred.expiresAt); err != nil {
		return nil, t.rollback(ctx, err)
	}
	if err := framework.DeleteWAL(ctx, t.storage, t.walID); err != nil {
		// A WAL entry left behind would roll back a live lease.
		return nil, t.rollback(ctx, fmt.Errorf("deleting WAL entry: %w", err))
	}
	t.walID = ""
	return resp, nil
}

// checkRevocable refuses to issue a lease the plugin could not revoke: it
// asks the API server whether the plugin may delete every kind, in every
// namespace, the lease creates, and remembers a yes for a minute.
func (t *leaseTxn) checkRevocable(ctx context.Context) error {
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

func (t *leaseTxn) plannedRefs() []objectRef {
	refs := make([]objectRef, len(t.objects))
	for i, p := range t.objects {
		refs[i] = p.ref()
	}
	return refs
}

func (t *leaseTxn) writeWAL(ctx context.Context, refs []objectRef) error {
	id, err := framework.PutWAL(ctx, t.storage, walObjectsKind, t.walEntry(refs))
	if err != nil {
		return fmt.Errorf("writing WAL entry: %w", err)
	}
	t.walID = id
	return nil
}

func (t *leaseTxn) walEntry(refs []objectRef) *walEntry {
	return &walEntry{
		Cluster: t.record.Cluster, Endpoint: t.record.Endpoint, IssueID: t.record.IssueID,
		CreatedAt: t.started.UTC(), Objects: refs,
	}
}

func (t *leaseTxn) createObjects(ctx context.Context) error {
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

// issuedCredential is the outcome of a successful TokenRequest.
type issuedCredential struct {
	token     string
	lease     leaseRecord
	leaseTTL  time.Duration
	expiresAt time.Time
	warnings  []string
}

func (t *leaseTxn) requestToken(ctx context.Context) (*issuedCredential, error) {
	expirationSeconds := tokenExpirationSeconds(t.ir.ttl)
	spec := authenticationv1.TokenRequestSpec{Audiences: t.ir.audiences, ExpirationSeconds: &expirationSeconds}
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

	cred := &issuedCredential{token: tr.Status.Token, lease: t.record, leaseTTL: t.ir.ttl}
	// The API server may shorten the token (--service-account-max-token-expiration):
	// the lease must never outlive it. Its timestamp has whole seconds and
	// its clock may differ a little from ours, hence the tolerance; the skew
	// still keeps the lease well inside the token's life.
	tokenLeft := tr.Status.ExpirationTimestamp.Sub(t.started.Truncate(time.Second)) - tokenExpirySkew
	if tokenLeft < cred.leaseTTL-expiryTolerance {
		if tokenLeft <= 0 {
			return nil, fmt.Errorf("the API server issued a token for %s that expires at once (%s)", sa, tr.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
		}
		cred.leaseTTL = tokenLeft.Truncate(time.Second)
		cred.warnings = append(cred.warnings, fmt.Sprintf("the API server shortened the token; lease capped at %s", cred.leaseTTL))
	}
	cred.expiresAt = t.started.Add(cred.leaseTTL).UTC()
	return cred, nil
}

// rollback undoes a failed issue and returns cause. What it cannot remove
// now stays covered by a WAL entry, so rollback retries it later.
func (t *leaseTxn) rollback(ctx context.Context, cause error) error {
	ctx, cancel := t.b.cleanupContext(ctx)
	defer cancel()
	left := deleteInRevokeOrder(ctx, t.client.api, t.record.Objects)
	for _, ref := range t.unknown {
		if err := t.b.deleteIfFromIssue(ctx, t.storage, t.client.api, ref, t.record.IssueID); err != nil {
			left = append(left, failedDelete{ref, err})
		}
	}
	if len(left) == 0 {
		if t.walID != "" {
			t.b.deleteWAL(ctx, t.storage, t.walID)
		}
		return cause
	}
	t.b.Logger().Error("could not undo a failed issue; rollback will retry", "cluster", t.record.Cluster, "error", left.err())
	previous := t.walID
	if err := t.writeWAL(ctx, left.refs()); err != nil {
		// The previous entry, if any, names a superset; keep it.
		t.b.Logger().Error("recording what a failed issue left", "objects", describeRefs(left.refs()), "error", err)
		return cause
	}
	if previous != "" {
		t.b.deleteWAL(ctx, t.storage, previous)
	}
	return cause
}
