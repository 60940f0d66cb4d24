package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthenticationv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

const secretTokenType = "service_account_token"

// conditionalFields are the response's keys present only for some requests
// or roles; every other documented key is in every response.
var conditionalFields = []string{"kubernetes_namespaces", "targets"}

func secretToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTokenType,
		Fields: map[string]*framework.FieldSchema{
			"service_account_token":     {Type: framework.TypeString, Description: "The service-account JWT."},
			"kubeconfig":                {Type: framework.TypeString, Description: "A kubeconfig (YAML) using the token: one cluster, user and context, namespace set."},
			"kubeconfig_json":           {Type: framework.TypeString, Description: "The same kubeconfig as single-line JSON."},
			"exec_credential":           {Type: framework.TypeString, Description: "The token as an ExecCredential (client.authentication.k8s.io/v1) JSON document, for kubectl credential plugins."},
			"cluster":                   {Type: framework.TypeString, Description: "The clusters/ entry that issued the credential."},
			"service_account_name":      {Type: framework.TypeString, Description: "The service account the token authenticates as: the role's, or the per-lease one."},
			"service_account_namespace": {Type: framework.TypeString, Description: "Its namespace."},
			"kubernetes_host":           {Type: framework.TypeString, Description: "The API server address the kubeconfig carries."},
			"kubernetes_ca_cert":        {Type: framework.TypeString, Description: "The CA bundle the kubeconfig carries."},
			"credential_id":             {Type: framework.TypeString, Description: "JTI=<jti>, as Kubernetes' audit log names the token."},
			"expires_at":                {Type: framework.TypeString, Description: "RFC 3339 time at which the lease ends and the token is revoked."},
			"kubernetes_namespaces":     {Type: framework.TypeString, Description: "Only with kubernetes_namespaces or targets: the namespaces the credential is bound in, comma-separated, the first being service_account_namespace."},
			"targets":                   {Type: framework.TypeSlice, Description: "Only for roles scoped to targets: the pods the credential can reach, as resolved at issue: a list of {namespace, pod, containers}."},
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

func describeTargets(targets []podTarget) string {
	parts := make([]string, len(targets))
	for i, t := range targets {
		parts[i] = t.String()
	}
	return strings.Join(parts, ", ")
}

func describeRefs(refs []objectRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

// leaseRecord is what a lease keeps in its InternalData: everything revoke
// needs, since Vault may revoke a lease it failed to register from that
// alone.
type leaseRecord struct {
	Cluster string
	// Endpoint is the ID of the endpoint that issued the lease; revoke goes
	// there, even after the cluster entry was re-pointed or deleted.
	Endpoint       string
	Role           string
	Namespace      string
	ServiceAccount string
	CredentialID   string
	IssueID        string
	// Objects the lease created, with UIDs, in creation order. The first is
	// the bound Secret or the per-lease ServiceAccount.
	Objects []objectRef
}

func (l leaseRecord) toMap() (map[string]interface{}, error) {
	objects, err := json.Marshal(l.Objects)
	if err != nil {
		return nil, fmt.Errorf("encoding lease objects: %w", err)
	}
	return map[string]interface{}{
		"cluster":         l.Cluster,
		"endpoint":        l.Endpoint,
		"role":            l.Role,
		"namespace":       l.Namespace,
		"service_account": l.ServiceAccount,
		"credential_id":   l.CredentialID,
		"issue_id":        l.IssueID,
		"objects":         string(objects),
	}, nil
}

func leaseRecordFrom(m map[string]interface{}) (leaseRecord, error) {
	str := func(k string) string { s, _ := m[k].(string); return s }
	l := leaseRecord{
		Cluster:        str("cluster"),
		Endpoint:       str("endpoint"),
		Role:           str("role"),
		Namespace:      str("namespace"),
		ServiceAccount: str("service_account"),
		CredentialID:   str("credential_id"),
		IssueID:        str("issue_id"),
	}
	if err := json.Unmarshal([]byte(str("objects")), &l.Objects); err != nil || l.Cluster == "" || len(l.Objects) == 0 {
		return l, errors.New("lease does not name its cluster and the objects it created")
	}
	return l, nil
}

// failedDelete is an object that could not be deleted, and why.
type failedDelete struct {
	ref objectRef
	err error
}

type failedDeletes []failedDelete

func (f failedDeletes) refs() []objectRef {
	out := make([]objectRef, len(f))
	for i, d := range f {
		out[i] = d.ref
	}
	return out
}

func (f failedDeletes) err() error {
	if len(f) == 0 {
		return nil
	}
	errs := make([]error, len(f))
	for i, d := range f {
		errs[i] = fmt.Errorf("deleting %s: %w", d.ref, d.err)
	}
	return errors.Join(errs...)
}

// inRevokeOrder returns refs ordered for deletion: what invalidates the
// token first, then by kind rank, later-created objects before earlier ones
// of the same rank.
func inRevokeOrder(refs []objectRef) []objectRef {
	order := slices.Clone(refs)
	slices.Reverse(order)
	slices.SortStableFunc(order, func(a, b objectRef) int { return rankOf(a.Kind) - rankOf(b.Kind) })
	return order
}

func rankOf(kind string) int {
	if k, ok := objectKinds[kind]; ok {
		return k.deleteRank
	}
	return len(objectKinds)
}

// deleteInRevokeOrder deletes refs with del, continuing past errors so one
// failure never leaves the token alive; it returns what failed. It is the
// one loop that deletes a lease's objects: revoke passes the UID-checked
// delete, rollback and a failed issue deleteIfFromIssue.
func deleteInRevokeOrder(refs []objectRef, del func(objectRef) error) failedDeletes {
	var failed failedDeletes
	for _, ref := range inRevokeOrder(refs) {
		if err := del(ref); err != nil {
			failed = append(failed, failedDelete{ref, err})
		}
	}
	return failed
}

// revoke deletes the lease's objects on the endpoint that issued it; the
// token dies with the first. Objects already gone count as deleted, so it is
// idempotent and safe to run concurrently.
func (b *backend) revoke(ctx context.Context, s logical.Storage, lease leaseRecord) error {
	client, err := b.endpointClient(ctx, s, lease.Cluster, lease.Endpoint)
	if err != nil {
		return err
	}
	return deleteInRevokeOrder(lease.Objects, func(ref objectRef) error { return client.api.DeleteObject(ctx, ref) }).err()
}

// credentialResponse is the lease as Vault returns it: the token, the
// kubeconfig in two forms and what was issued, with the record revoke needs.
func (b *backend) credentialResponse(req *logical.Request, ir *issueRequest, client *clusterClient, cred *issuedCredential) (*logical.Response, error) {
	ep := client.endpoint
	role := ir.role
	lease := cred.lease
	params := ep.kubeconfigParams(role.Cluster, lease.ServiceAccount, role.kubeconfigNamespace(lease.Namespace))
	params.Token = cred.token
	kubeconfigYAML, kubeconfigJSON, err := buildKubeconfig(params)
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
	if len(ir.targets) > 0 {
		resp.Data["targets"] = targetsData(ir.targets)
		resp.AddWarning(targetsNotCoveredWarning)
	}
	resp.Secret.TTL = cred.leaseTTL
	resp.Secret.MaxTTL = cred.leaseTTL
	resp.Secret.Renewable = false
	for _, w := range append(ir.warnings, cred.warnings...) {
		resp.AddWarning(w)
	}
	logArgs := []interface{}{"role", ir.roleName, "cluster", role.Cluster,
		"service_account", lease.Namespace + "/" + lease.ServiceAccount, "objects", describeRefs(lease.Objects),
		"credential_id", lease.CredentialID, "expires_at", resp.Data["expires_at"], "request_id", req.ID}
	if len(ir.targets) > 0 {
		logArgs = append(logArgs, "targets", describeTargets(ir.targets))
	}
	b.Logger().Info("issued credential", logArgs...)
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
