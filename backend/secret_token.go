package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// leaseInternal is what Revoke needs. Revoke reads only InternalData,
// because Vault may revoke a lease it failed to register from it alone.
type leaseInternal struct {
	Cluster        string
	Role           string
	Namespace      string
	ServiceAccount string
	CredentialID   string
	// Objects the lease created, in creation order; revoke deletes them in
	// reverse. The first is the bound Secret or the per-lease ServiceAccount.
	Objects []objectRef
}

func (l leaseInternal) toMap() (map[string]interface{}, error) {
	objects, err := json.Marshal(l.Objects)
	if err != nil {
		return nil, fmt.Errorf("encoding lease objects: %w", err)
	}
	return map[string]interface{}{
		"cluster":         l.Cluster,
		"role":            l.Role,
		"namespace":       l.Namespace,
		"service_account": l.ServiceAccount,
		"credential_id":   l.CredentialID,
		"objects":         string(objects),
	}, nil
}

func leaseInternalFrom(m map[string]interface{}) (leaseInternal, error) {
	str := func(k string) string { s, _ := m[k].(string); return s }
	l := leaseInternal{
		Cluster:        str("cluster"),
		Role:           str("role"),
		Namespace:      str("namespace"),
		ServiceAccount: str("service_account"),
		CredentialID:   str("credential_id"),
	}
	if err := json.Unmarshal([]byte(str("objects")), &l.Objects); err != nil || l.Cluster == "" || len(l.Objects) == 0 {
		return l, errors.New("lease does not name its cluster and the objects it created")
	}
	return l, nil
}

// revokeToken deletes the lease's objects; Kubernetes then rejects the
// token. It is idempotent and safe to run concurrently: objects already gone
// count as deleted.
func (b *backend) revokeToken(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	lease, err := leaseInternalFrom(req.Secret.InternalData)
	if err != nil {
		return nil, err
	}
	client, err := b.client(ctx, req.Storage, lease.Cluster)
	if err != nil {
		return nil, fmt.Errorf("revoking %s: %w", lease.CredentialID, err)
	}
	if err := deleteObjects(ctx, client.api, lease.Objects); err != nil {
		return nil, fmt.Errorf("revoking %s: %w", lease.CredentialID, err)
	}
	b.Logger().Info("revoked credential", "role", lease.Role, "cluster", lease.Cluster,
		"objects", describeRefs(lease.Objects), "credential_id", lease.CredentialID, "request_id", req.ID)
	return nil, nil
}

// deleteObjects deletes refs in reverse creation order, so a binding never
// outlives its ServiceAccount's deletion by more than a moment.
func deleteObjects(ctx context.Context, api kubeAPI, refs []objectRef) error {
	for i := len(refs) - 1; i >= 0; i-- {
		if err := api.DeleteObject(ctx, refs[i]); err != nil {
			return fmt.Errorf("deleting %s: %w", refs[i], err)
		}
	}
	return nil
}

func describeRefs(refs []objectRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

func kindOf(obj metav1.Object) string {
	switch obj.(type) {
	case *corev1.Secret:
		return kindSecret
	case *corev1.ServiceAccount:
		return kindServiceAccount
	case *rbacv1.Role:
		return kindRole
	case *rbacv1.ClusterRole:
		return kindClusterRole
	case *rbacv1.RoleBinding:
		return kindRoleBinding
	case *rbacv1.ClusterRoleBinding:
		return kindClusterRoleBinding
	}
	return fmt.Sprintf("%T", obj)
}
