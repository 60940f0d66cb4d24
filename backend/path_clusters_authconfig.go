package backend

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// clusters/<name>/authentication-config: route, handler and help.

const (
	// authenticationConfigAPIVersion is the stable version (Kubernetes
	// 1.34+); 1.30 to 1.33 read the same document as v1beta1.
	authenticationConfigAPIVersion = "apiserver.config.k8s.io/v1"

	clusterAuthConfigHelpSynopsis    = "The AuthenticationConfiguration that makes a cluster's API server trust this mount's tokens."
	clusterAuthConfigHelpDescription = `
For a cluster in issuer mode (use_issuer), returns authentication_config: a
complete AuthenticationConfiguration (apiserver.config.k8s.io/v1, Kubernetes
1.34 and later; on 1.30 to 1.33 write apiserver.config.k8s.io/v1beta1) with one
jwt authenticator for this mount's issuer, accepting only the audience
generated for the cluster's current endpoint, and mapping the token's sub to
the username "<issuer>#<sub>". Give it to the API server with
--authentication-config (or merge its jwt entry into the file already there;
the file is reloaded without a restart). username and rbac_subject are what
RBAC must name; clusters/<name>/rbac binds the plugin's rights to it.

retired_audiences lists the audiences of this cluster's retired endpoints in
issuer mode, which still revoke the leases they issued. They are never part of
authentication_config: a retired endpoint may have been written by someone
pointing the entry elsewhere, so only an operator who knows it was this same
API server adds its audience, until its keep_until (retired_endpoints in the
cluster read).
`
)

func pathClusterAuthConfig(b *backend) *framework.Path {
	return clusterActionPath("authentication-config", "cluster-authentication-config", map[logical.Operation]framework.OperationHandler{
		logical.ReadOperation: &framework.PathOperation{
			Callback:     b.entry(clusterName, false, b.clusterAuthConfig),
			Summary:      "Return the AuthenticationConfiguration a cluster's API server needs to trust the plugin's tokens.",
			DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
		},
	}, clusterAuthConfigHelpSynopsis, clusterAuthConfigHelpDescription)
}

// The parts of AuthenticationConfiguration the snippet uses, spelled as
// k8s.io/apiserver's v1 types (that module is not a dependency).
type authenticationConfiguration struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	JWT        []jwtAuthenticator `json:"jwt"`
}

type jwtAuthenticator struct {
	Issuer        jwtIssuer        `json:"issuer"`
	ClaimMappings jwtClaimMappings `json:"claimMappings"`
}

type jwtIssuer struct {
	URL                  string   `json:"url"`
	CertificateAuthority string   `json:"certificateAuthority,omitempty"`
	Audiences            []string `json:"audiences"`
	AudienceMatchPolicy  string   `json:"audienceMatchPolicy"`
}

type jwtClaimMappings struct {
	Username prefixedClaim `json:"username"`
}

type prefixedClaim struct {
	Claim  string `json:"claim"`
	Prefix string `json:"prefix"`
}

func (b *backend) clusterAuthConfig(ctx context.Context, req *logical.Request, _ *framework.FieldData, name string) (*logical.Response, error) {
	cfg, err := getCluster(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errClusterNotFound(name)
	}
	if !cfg.UseIssuer {
		return nil, userError{fmt.Errorf("cluster %q is not in issuer mode (use_issuer): its API server authenticates the plugin's stored credential, not tokens the plugin signs", name)}
	}
	issuer, err := getIssuerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if issuer == nil {
		return nil, errIssuerNotConfigured
	}
	doc, err := authenticationConfigYAML(issuer, cfg)
	if err != nil {
		return nil, err
	}
	retired, err := retiredIssuerAudiences(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	username := issuerUsername(issuer.Issuer, cfg.IssuerSubject)
	return &logical.Response{Data: map[string]interface{}{
		"retired_audiences":     retired,
		"authentication_config": doc,
		"issuer":                issuer.Issuer,
		"audience":              cfg.issuerAudience(),
		"subject":               cfg.IssuerSubject,
		"username":              username,
		"rbac_subject":          map[string]interface{}{"kind": rbacv1.UserKind, "apiGroup": rbacv1.GroupName, "name": username},
	}}, nil
}

// retiredIssuerAudiences describes the retired issuer-mode endpoints of a
// cluster, oldest first, for the operator to judge; none is trusted here.
func retiredIssuerAudiences(ctx context.Context, s logical.Storage, cluster string) ([]map[string]interface{}, error) {
	retired, err := listRetiredEndpoints(ctx, s, cluster)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(retired, func(a, b *retiredEndpoint) int { return a.RetiredAt.Compare(b.RetiredAt) })
	out := []map[string]interface{}{}
	for _, r := range retired {
		if !r.Config.UseIssuer {
			continue
		}
		out = append(out, map[string]interface{}{
			"audience":        r.Config.issuerAudience(),
			"endpoint_id":     r.Config.endpointID(),
			"kubernetes_host": r.Config.Host,
			"retired_at":      r.RetiredAt.Format(time.RFC3339),
		})
	}
	return out, nil
}

// authenticationConfigYAML is the whole AuthenticationConfiguration for
// one cluster in issuer mode.
func authenticationConfigYAML(issuer *issuerConfig, cfg *clusterConfig) (string, error) {
	doc := authenticationConfiguration{
		APIVersion: authenticationConfigAPIVersion,
		Kind:       "AuthenticationConfiguration",
		JWT: []jwtAuthenticator{{
			Issuer: jwtIssuer{
				URL:                  issuer.Issuer,
				CertificateAuthority: issuer.IssuerCACert,
				Audiences:            []string{cfg.issuerAudience()},
				AudienceMatchPolicy:  "MatchAny",
			},
			ClaimMappings: jwtClaimMappings{Username: prefixedClaim{Claim: "sub", Prefix: issuer.Issuer + "#"}},
		}},
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("writing the AuthenticationConfiguration: %w", err)
	}
	return string(out), nil
}
