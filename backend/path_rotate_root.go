package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// clusters/<name>/rotate-root: route, handler and help.

func pathRotateRoot(b *backend) *framework.Path {
	return clusterActionPath("rotate-root", "cluster-root", map[logical.Operation]framework.OperationHandler{
		logical.UpdateOperation: &framework.PathOperation{
			Callback:                    b.entry(clusterName, true, b.rotateRootHandler),
			Summary:                     "Replace the plugin's own credential with a fresh token for the same service account.",
			DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "rotate"},
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
		},
	}, "Rotate the plugin's own token-requester credential.", `
With the stored credential, requests a token for the plugin's own service
account (named by the stored JWT's claims), bound to a new Secret in that
account's namespace and valid for service_account_jwt_ttl; checks that it
authenticates; stores it; and after a short grace deletes the Secret of the
previous rotation, which kills the previous token. A token the plugin did not
create is left to the operator. The response carries the new credential's
credential_id and expires_at, never the token. A cluster in issuer mode
stores no credential: rotate the issuer's keys with issuer/rotate instead.
`)
}

func (b *backend) rotateRootHandler(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	cfg, err := getCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if cfg != nil && cfg.UseIssuer {
		return nil, userError{fmt.Errorf("cluster %q is in issuer mode: the plugin stores no Kubernetes credential there, so there is nothing to rotate; the issuer's keys rotate with issuer/rotate", name)}
	}
	res, err := b.rotateRoot(ctx, req.Storage, name, time.Now())
	if err != nil {
		return nil, err
	}
	b.rotation.reset(name)
	resp := &logical.Response{Data: res.data()}
	resp.Warnings = res.warnings
	return resp, nil
}
