package backend

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthenticationv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// credentialResponse is the lease as Vault returns it: the token, the
// kubeconfig in two forms and what was issued, with the record revoke needs.
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
	execCredential, err := buildExecCredential(cred.token, cred.expiresAt)
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
		"exec_credential":           execCredential,
		"cluster":                   role.Cluster,
		"service_account_name":      lease.ServiceAccount,
		"service_account_namespace": lease.Namespace,
		"kubernetes_host":           ep.KubeconfigHost,
		"kubernetes_ca_cert":        ep.KubeconfigCACert,
		"credential_id":             lease.CredentialID,
		"expires_at":                cred.expiresAt.Format(time.RFC3339),
	}, internal)
	if len(ir.namespaces) > 0 {
		resp.Data["kubernetes_namespaces"] = strings.Join(ir.namespaces, ",")
	}
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

// buildExecCredential returns the token as a single-line ExecCredential
// (client.authentication.k8s.io/v1), what a kubectl credential plugin
// prints: `vault read -field=exec_credential <mount>/creds/<role>` is one.
// Its expirationTimestamp is the lease's end (whole seconds, never later),
// so client-go runs the plugin again before the revoked token is refused.
func buildExecCredential(token string, expiresAt time.Time) (string, error) {
	exp := metav1.NewTime(expiresAt.Truncate(time.Second))
	ec := clientauthenticationv1.ExecCredential{
		TypeMeta: metav1.TypeMeta{APIVersion: clientauthenticationv1.SchemeGroupVersion.String(), Kind: "ExecCredential"},
		Status:   &clientauthenticationv1.ExecCredentialStatus{Token: token, ExpirationTimestamp: &exp},
	}
	j, err := json.Marshal(&ec)
	if err != nil {
		return "", fmt.Errorf("encoding the exec credential: %w", err)
	}
	return string(j), nil
}
