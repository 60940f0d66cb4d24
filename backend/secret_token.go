package backend

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/apimachinery/pkg/types"
)

const secretTokenType = "service_account_token"

func secretToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTokenType,
		Fields: map[string]*framework.FieldSchema{
			"service_account_token": {Type: framework.TypeString, Description: "The service-account JWT."},
			"kubeconfig":            {Type: framework.TypeString, Description: "A kubeconfig (YAML) using the token."},
			"kubeconfig_json":       {Type: framework.TypeString, Description: "The same kubeconfig as single-line JSON."},
			"credential_id":         {Type: framework.TypeString, Description: "JTI=<jti>, as Kubernetes' audit log names the token."},
			"expires_at":            {Type: framework.TypeString, Description: "RFC 3339 time at which the lease ends and the token is revoked."},
		},
		// No Renew: the lease is not renewable; get a new credential instead.
		Revoke: b.revokeToken,
	}
}

// leaseInternal is what Revoke needs; it reads only InternalData, because
// Vault may revoke a lease it failed to register from the response alone.
type leaseInternal struct {
	Cluster      string
	Namespace    string
	SecretName   string
	SecretUID    types.UID
	Role         string
	CredentialID string
}

func (l leaseInternal) toMap() map[string]interface{} {
	return map[string]interface{}{
		"cluster":       l.Cluster,
		"namespace":     l.Namespace,
		"secret_name":   l.SecretName,
		"secret_uid":    string(l.SecretUID),
		"role":          l.Role,
		"credential_id": l.CredentialID,
	}
}

func leaseInternalFrom(m map[string]interface{}) (leaseInternal, error) {
	str := func(k string) string { s, _ := m[k].(string); return s }
	l := leaseInternal{
		Cluster:      str("cluster"),
		Namespace:    str("namespace"),
		SecretName:   str("secret_name"),
		SecretUID:    types.UID(str("secret_uid")),
		Role:         str("role"),
		CredentialID: str("credential_id"),
	}
	if l.Cluster == "" || l.Namespace == "" || l.SecretName == "" {
		return l, errors.New("lease is missing its cluster, namespace or bound Secret name")
	}
	return l, nil
}

// revokeToken deletes the bound Secret; Kubernetes then rejects the token.
// It is idempotent and safe to run concurrently: a Secret already gone
// counts as revoked.
func (b *backend) revokeToken(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	lease, err := leaseInternalFrom(req.Secret.InternalData)
	if err != nil {
		return nil, err
	}
	client, err := b.client(ctx, req.Storage, lease.Cluster)
	if err != nil {
		return nil, fmt.Errorf("revoking %s: %w", lease.CredentialID, err)
	}
	if err := client.api.DeleteSecret(ctx, lease.Namespace, lease.SecretName, lease.SecretUID); err != nil {
		return nil, fmt.Errorf("deleting bound Secret %s/%s of %s: %w", lease.Namespace, lease.SecretName, lease.CredentialID, err)
	}
	b.Logger().Info("revoked credential", "role", lease.Role, "cluster", lease.Cluster,
		"namespace", lease.Namespace, "secret", lease.SecretName, "credential_id", lease.CredentialID, "request_id", req.ID)
	return nil, nil
}
