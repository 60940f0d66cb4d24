package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
)

// tokenExpirySkew keeps the lease ending before the token does, so Vault,
// not the JWT's exp, decides when a credential stops working.
const tokenExpirySkew = 30 * time.Second

// issuedCredential is the outcome of one successful issue.
type issuedCredential struct {
	token     string
	lease     leaseInternal
	leaseTTL  time.Duration
	expiresAt time.Time
	warnings  []string
}

// issue creates the bound Secret and requests the token. Whatever fails after
// the Secret exists deletes it again; the WAL entry covers a crash in between.
func (b *backend) issue(ctx context.Context, req *logical.Request, client *clusterClient, ir *issueRequest) (*issuedCredential, error) {
	role := ir.role
	started := time.Now()
	secretName := randomSecretName()
	walID, err := framework.PutWAL(ctx, req.Storage, walBoundSecretKind, &walBoundSecret{
		Cluster: role.Cluster, Namespace: role.ServiceAccountNamespace, Name: secretName,
	})
	if err != nil {
		return nil, fmt.Errorf("writing WAL entry: %w", err)
	}

	secret, err := client.api.CreateSecret(ctx, boundSecret(secretName, ir.roleName, role, started.Add(ir.ttl)))
	if err != nil {
		b.deleteWAL(ctx, req, walID)
		return nil, fmt.Errorf("creating bound Secret in namespace %q: %w", role.ServiceAccountNamespace, err)
	}
	lease := leaseInternal{
		Cluster: role.Cluster, Namespace: role.ServiceAccountNamespace,
		SecretName: secret.Name, SecretUID: secret.UID, Role: ir.roleName,
	}

	cred, err := b.requestToken(ctx, client, ir, lease, started)
	if err == nil {
		if err = framework.DeleteWAL(ctx, req.Storage, walID); err != nil {
			err = fmt.Errorf("deleting WAL entry: %w", err)
		}
	}
	if err != nil {
		cleanupCtx, cancel := b.cleanupContext(ctx)
		defer cancel()
		if delErr := client.api.DeleteSecret(cleanupCtx, lease.Namespace, lease.SecretName, lease.SecretUID); delErr != nil {
			// The WAL entry stays, so rollback deletes the Secret later.
			b.Logger().Error("deleting bound Secret after a failed issue", "namespace", lease.Namespace, "secret", lease.SecretName, "error", delErr)
		} else {
			b.deleteWAL(ctx, req, walID)
		}
		return nil, err
	}
	return cred, nil
}

func (b *backend) requestToken(ctx context.Context, client *clusterClient, ir *issueRequest, lease leaseInternal, started time.Time) (*issuedCredential, error) {
	role := ir.role
	expirationSeconds := tokenExpirationSeconds(ir.ttl)
	tr, err := client.api.CreateToken(ctx, role.ServiceAccountNamespace, role.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         ir.audiences,
			ExpirationSeconds: &expirationSeconds,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Secret", APIVersion: "v1", Name: lease.SecretName, UID: lease.SecretUID,
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for service account %s/%s: %w", role.ServiceAccountNamespace, role.ServiceAccountName, err)
	}
	if tr.Status.Token == "" {
		return nil, fmt.Errorf("TokenRequest for %s/%s returned no token", role.ServiceAccountNamespace, role.ServiceAccountName)
	}
	claims, err := parseTokenClaims(tr.Status.Token)
	if err != nil {
		return nil, err
	}
	lease.CredentialID = credentialID(claims.JTI)

	cred := &issuedCredential{token: tr.Status.Token, lease: lease, leaseTTL: ir.ttl}
	// The API server may shorten the token (--service-account-max-token-expiration):
	// the lease must never outlive it.
	if tokenLeft := tr.Status.ExpirationTimestamp.Sub(started) - tokenExpirySkew; tokenLeft < cred.leaseTTL {
		if tokenLeft <= 0 {
			return nil, fmt.Errorf("the API server issued a token for %s/%s that expires at once (%s)", role.ServiceAccountNamespace, role.ServiceAccountName, tr.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
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
	kubeconfigYAML, kubeconfigJSON, err := buildKubeconfig(kubeconfigParams{
		ClusterName:   role.Cluster,
		Server:        ep.KubeconfigHost,
		CACert:        ep.KubeconfigCACert,
		TLSServerName: ep.TLSServerName,
		UserName:      role.ServiceAccountName,
		Token:         cred.token,
		Namespace:     role.kubeconfigNamespace(),
	})
	if err != nil {
		return nil, err
	}
	resp := b.Secret(secretTokenType).Response(map[string]interface{}{
		"service_account_token":     cred.token,
		"kubeconfig":                kubeconfigYAML,
		"kubeconfig_json":           kubeconfigJSON,
		"cluster":                   role.Cluster,
		"service_account_name":      role.ServiceAccountName,
		"service_account_namespace": role.ServiceAccountNamespace,
		"kubernetes_host":           ep.KubeconfigHost,
		"kubernetes_ca_cert":        ep.KubeconfigCACert,
		"credential_id":             cred.lease.CredentialID,
		"expires_at":                cred.expiresAt.Format(time.RFC3339),
	}, cred.lease.toMap())
	resp.Secret.TTL = cred.leaseTTL
	resp.Secret.MaxTTL = cred.leaseTTL
	resp.Secret.Renewable = false
	for _, w := range append(ir.warnings, cred.warnings...) {
		resp.AddWarning(w)
	}
	b.Logger().Info("issued credential", "role", ir.roleName, "cluster", role.Cluster,
		"service_account", role.ServiceAccountNamespace+"/"+role.ServiceAccountName,
		"secret", cred.lease.SecretName, "credential_id", cred.lease.CredentialID,
		"expires_at", resp.Data["expires_at"], "request_id", req.ID)
	return resp, nil
}
