package backend

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
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

// revokeToken is the lease's Revoke: it works from InternalData alone and
// reports success only once every object is gone from the API server that
// issued the lease. Errors never hold a token: Vault stores them with the
// lease.
func (b *backend) revokeToken(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	lease, err := leaseRecordFrom(req.Secret.InternalData)
	if err != nil {
		return nil, err
	}
	if err := b.revoke(ctx, req.Storage, lease); err != nil {
		return nil, fmt.Errorf("revoking %s: %w", lease.CredentialID, err)
	}
	b.Logger().Info("revoked credential", "role", lease.Role, "cluster", lease.Cluster, "endpoint", lease.Endpoint,
		"objects", describeRefs(lease.Objects), "credential_id", lease.CredentialID, "request_id", req.ID)
	return nil, nil
}

func describeRefs(refs []objectRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}
