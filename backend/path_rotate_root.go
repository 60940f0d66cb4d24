package backend

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// clusters/<name>/rotate-root: route, handler and help.

func pathRotateRoot(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "clusters/" + namePathPattern + "/rotate-root$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "cluster-root",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeString, Description: "Name of the cluster.", Required: true},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.rotateRootHandler,
				Summary:                     "Replace the plugin's own credential with a fresh token for the same service account.",
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "rotate"},
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis: "Rotate the plugin's own token-requester credential.",
		HelpDescription: `
With the stored credential, requests a token for the plugin's own service
account (named by the stored JWT's claims), bound to a new Secret in that
account's namespace and valid for service_account_jwt_ttl; checks that it
authenticates; stores it; and after a short grace deletes the Secret of the
previous rotation, which kills the previous token. A token the plugin did not
create is left to the operator. The response carries the new credential's
credential_id and expires_at, never the token.
`,
	}
}

func (b *backend) rotateRootHandler(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(d); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	name := d.Get("name").(string)
	if err := validateVaultName("cluster", name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	res, err := b.rotateRoot(ctx, req.Storage, name, time.Now())
	if err != nil {
		return respond(name, nil, err)
	}
	b.rotation.reset(name)
	resp := &logical.Response{Data: res.data()}
	resp.Warnings = res.warnings
	return resp, nil
}
