package backend

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tokenExpirySkew keeps the lease ending before the token does, so Vault,
// not the JWT's exp, decides when a credential stops working.
const tokenExpirySkew = 30 * time.Second

// expiryTolerance is how much shorter than asked a token may come back
// before the lease is shortened to match.
const expiryTolerance = 5 * time.Second

// issuePlan is what one lease creates before asking for its token.
type issuePlan struct {
	namespace      string
	serviceAccount string
	objects        []metav1.Object
	// bindToken binds the token to objects[0] (the per-lease Secret);
	// otherwise objects[0] is the per-lease ServiceAccount itself.
	bindToken bool
}

func planIssue(ir *issueRequest, displayName string, started time.Time) (*issuePlan, error) {
	expiresAt := started.Add(ir.ttl)
	if !ir.role.ephemeral() {
		return &issuePlan{
			namespace:      ir.namespace,
			serviceAccount: ir.role.ServiceAccountName,
			objects:        []metav1.Object{boundSecret(randomSecretName(), ir.roleName, ir.role, expiresAt)},
			bindToken:      true,
		}, nil
	}
	name, err := renderName(ir.role.nameTemplate(), nameTemplateData{RoleName: ir.roleName, DisplayName: displayName, Namespace: ir.namespace})
	if err != nil {
		return nil, userError{err}
	}
	objs, err := ephemeralObjects(name, ir, expiresAt)
	if err != nil {
		return nil, err
	}
	return &issuePlan{namespace: ir.namespace, serviceAccount: name, objects: objs}, nil
}

// issuedCredential is the outcome of one successful issue.
type issuedCredential struct {
	token     string
	lease     leaseInternal
	leaseTTL  time.Duration
	expiresAt time.Time
	warnings  []string
}

// issue creates the lease's objects and requests the token. Whatever fails
// after the first object exists deletes what was created; the WAL entry
// covers a crash in between.
//
// For a role's existing service account the WAL entry is written while
// the per-lease Secret is being created, two independent round trips, and
// is stored before the token is requested: a crash in between can only
// leave an empty Secret no token is bound to, which tidy removes once its
// expires-at passes. Ephemeral roles store the entry first: their objects
// grant access.
func (b *backend) issue(ctx context.Context, req *logical.Request, client *clusterClient, ir *issueRequest) (*issuedCredential, error) {
	started := time.Now()
	plan, err := planIssue(ir, req.DisplayName, started)
	if err != nil {
		return nil, err
	}
	if err := b.ensureRevocable(ctx, client, plan.objects[0]); err != nil {
		return nil, err
	}
	planned := make([]objectRef, len(plan.objects))
	for i, obj := range plan.objects {
		planned[i] = objectRef{Kind: kindOf(obj), Namespace: obj.GetNamespace(), Name: obj.GetName()}
	}
	wal := putWALAsync(ctx, req.Storage, &walObjects{Cluster: ir.role.Cluster, Objects: planned})

	lease := leaseInternal{
		Cluster: ir.role.Cluster, Role: ir.roleName,
		Namespace: plan.namespace, ServiceAccount: plan.serviceAccount,
	}
	cred, err := b.createAndRequest(ctx, client, ir, plan, &lease, started, wal.wait)
	walID, walErr := wal.wait()
	if err == nil && walErr == nil {
		if err = framework.DeleteWAL(ctx, req.Storage, walID); err != nil {
			err = fmt.Errorf("deleting WAL entry: %w", err)
		}
	}
	if err == nil {
		err = walErr
	}
	if err != nil {
		cleanupCtx, cancel := b.cleanupContext(ctx)
		defer cancel()
		if delErr := deleteObjects(cleanupCtx, client.api, lease.Objects); delErr != nil {
			// The WAL entry stays, so rollback deletes the rest later.
			b.Logger().Error("deleting the objects of a failed issue", "error", delErr)
		} else if walErr == nil {
			b.deleteWAL(ctx, req, walID)
		}
		return nil, err
	}
	return cred, nil
}

// pendingWAL is a WAL entry being written.
type pendingWAL struct {
	done chan struct{}
	id   string
	err  error
}

func putWALAsync(ctx context.Context, s logical.Storage, entry *walObjects) *pendingWAL {
	w := &pendingWAL{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.id, w.err = framework.PutWAL(ctx, s, walObjectsKind, entry)
		if w.err != nil {
			w.err = fmt.Errorf("writing WAL entry: %w", w.err)
		}
	}()
	return w
}

// wait returns the entry's ID once it is stored; it may be called again.
func (w *pendingWAL) wait() (string, error) {
	<-w.done
	return w.id, w.err
}

// createAndRequest creates the plan's objects and requests the token.
// walStored blocks until the WAL entry is stored: ephemeral objects grant
// access, so they wait for it; the token always does.
func (b *backend) createAndRequest(ctx context.Context, client *clusterClient, ir *issueRequest, plan *issuePlan, lease *leaseInternal, started time.Time, walStored func() (string, error)) (*issuedCredential, error) {
	if !plan.bindToken {
		if _, err := walStored(); err != nil {
			return nil, err
		}
	}
	for i, obj := range plan.objects {
		if i > 0 {
			ownedBy(obj, lease.Objects[0])
		}
		ref, err := client.api.CreateObject(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("creating %s %q: %w", kindOf(obj), obj.GetName(), err)
		}
		lease.Objects = append(lease.Objects, ref)
	}
	if _, err := walStored(); err != nil {
		return nil, err
	}

	expirationSeconds := tokenExpirationSeconds(ir.ttl)
	spec := authenticationv1.TokenRequestSpec{Audiences: ir.audiences, ExpirationSeconds: &expirationSeconds}
	if plan.bindToken {
		bound := lease.Objects[0]
		spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: bound.Kind, APIVersion: "v1", Name: bound.Name, UID: bound.UID}
	}
	sa := plan.namespace + "/" + plan.serviceAccount
	tr, err := client.api.CreateToken(ctx, plan.namespace, plan.serviceAccount, &authenticationv1.TokenRequest{Spec: spec})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for service account %s: %w", sa, err)
	}
	if tr.Status.Token == "" {
		return nil, fmt.Errorf("TokenRequest for %s returned no token", sa)
	}
	claims, err := parseTokenClaims(tr.Status.Token)
	if err != nil {
		return nil, err
	}
	lease.CredentialID = credentialID(claims.JTI)

	cred := &issuedCredential{token: tr.Status.Token, lease: *lease, leaseTTL: ir.ttl}
	// The API server may shorten the token (--service-account-max-token-expiration):
	// the lease must never outlive it. Its timestamp has whole seconds and
	// its clock may differ a little from ours, hence the tolerance; the skew
	// still keeps the lease well inside the token's life.
	tokenLeft := tr.Status.ExpirationTimestamp.Sub(started.Truncate(time.Second)) - tokenExpirySkew
	if tokenLeft < cred.leaseTTL-expiryTolerance {
		if tokenLeft <= 0 {
			return nil, fmt.Errorf("the API server issued a token for %s that expires at once (%s)", sa, tr.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
		}
		cred.leaseTTL = tokenLeft.Truncate(time.Second)
		cred.warnings = append(cred.warnings, fmt.Sprintf("the API server shortened the token; lease capped at %s", cred.leaseTTL))
	}
	cred.expiresAt = started.Add(cred.leaseTTL).UTC()
	return cred, nil
}

func (b *backend) deleteWAL(ctx context.Context, req *logical.Request, id string) {
	if err := framework.DeleteWAL(ctx, req.Storage, id); err != nil {
		// Rollback will find nothing to delete and drop the entry.
		b.Logger().Warn("deleting WAL entry", "id", id, "error", err)
	}
}

func (b *backend) credentialResponse(req *logical.Request, ir *issueRequest, client *clusterClient, cred *issuedCredential) (*logical.Response, error) {
	ep := client.endpoint
	role := ir.role
	lease := cred.lease
	kubeconfigYAML, kubeconfigJSON, err := buildKubeconfig(kubeconfigParams{
		ClusterName:   role.Cluster,
		Server:        ep.KubeconfigHost,
		CACert:        ep.KubeconfigCACert,
		TLSServerName: ep.TLSServerName,
		UserName:      lease.ServiceAccount,
		Token:         cred.token,
		Namespace:     role.kubeconfigNamespace(lease.Namespace),
	})
	if err != nil {
		return nil, err
	}
	internal, err := lease.toMap()
	if err != nil {
		return nil, err
	}
	resp := b.Secret(secretTokenType).Response(map[string]interface{}{
		"service_account_token":     cred.token,
		"kubeconfig":                kubeconfigYAML,
		"kubeconfig_json":           kubeconfigJSON,
		"cluster":                   role.Cluster,
		"service_account_name":      lease.ServiceAccount,
		"service_account_namespace": lease.Namespace,
		"kubernetes_host":           ep.KubeconfigHost,
		"kubernetes_ca_cert":        ep.KubeconfigCACert,
		"credential_id":             lease.CredentialID,
		"expires_at":                cred.expiresAt.Format(time.RFC3339),
	}, internal)
	resp.Secret.TTL = cred.leaseTTL
	resp.Secret.MaxTTL = cred.leaseTTL
	resp.Secret.Renewable = false
	for _, w := range append(ir.warnings, cred.warnings...) {
		resp.AddWarning(w)
	}
	b.Logger().Info("issued credential", "role", ir.roleName, "cluster", role.Cluster,
		"service_account", lease.Namespace+"/"+lease.ServiceAccount, "objects", describeRefs(lease.Objects),
		"credential_id", lease.CredentialID, "expires_at", resp.Data["expires_at"], "request_id", req.ID)
	return resp, nil
}

// revocableCheckTTL is how long a positive "may delete" answer is trusted.
const revocableCheckTTL = time.Minute

// ensureRevocable refuses to issue a lease the plugin could not revoke: it
// asks the API server whether the plugin may delete the object whose
// deletion kills the token, and remembers a yes for a minute.
func (b *backend) ensureRevocable(ctx context.Context, client *clusterClient, first metav1.Object) error {
	kind, ns := kindOf(first), first.GetNamespace()
	key := kind + "/" + ns
	if checked, ok := client.revocable.Load(key); ok && time.Since(checked.(time.Time)) < revocableCheckTTL {
		return nil
	}
	resource := strings.ToLower(kind) + "s"
	allowed, err := client.api.Allowed(ctx, authorizationv1.ResourceAttributes{Verb: "delete", Resource: resource, Namespace: ns})
	if err != nil {
		return fmt.Errorf("checking that the plugin may delete %s in namespace %q: %w", resource, ns, err)
	}
	if !allowed {
		return fmt.Errorf("the plugin may not delete %s in namespace %q, so it could not revoke the lease; grant it (see deploy/) and check with clusters/<name>/check", resource, ns)
	}
	client.revocable.Store(key, time.Now())
	return nil
}
