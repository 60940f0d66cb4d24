package backend

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The plugin holds rights no lease may have: it mints tokens for every
// role's service account and deletes the Secrets that keep other leases
// alive, and with self-rotation it may mint tokens for its own service
// account. A roles/ writer must never turn those rights into a credential,
// so an existing-account role is refused
//
//   - when its service account is the identity of its cluster's credential,
//     current or retired (checked at role write, and again at every issue:
//     credentials rotate and clusters are re-pointed), and
//   - in a namespace where the plugin may mint tokens for any service
//     account (its serviceaccounts/token right is not limited by
//     resourceNames): there the role writer, not the cluster operator, would
//     choose which identity the plugin hands out.

// serviceAccountUser is how the API server names a service account.
func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// credentialUser is the user a cluster entry's credential authenticates
// as, read from the token's claims: the stored JWT, or the pod's own token.
// ok is false when the claims do not say (not a service-account token).
func credentialUser(cfg *clusterConfig, env inClusterEnv) (string, bool) {
	if cfg.UseIssuer {
		// A user the API server's AuthenticationConfiguration maps the
		// plugin's own tokens to, never a service account a role could
		// name; the claims do not say which, so issue asks the API server
		// (selfUsers), as it does for any credential whose claims are
		// silent.
		return "", false
	}
	jwt := cfg.JWT
	if cfg.inCluster() {
		raw, err := os.ReadFile(env.TokenPath)
		if err != nil {
			return "", false
		}
		jwt = string(raw)
	}
	claims, err := parseTokenClaims(jwt)
	if err != nil {
		return "", false
	}
	ns, sa, ok := claims.serviceAccount()
	if !ok {
		return "", false
	}
	return serviceAccountUser(ns, sa), true
}

// storedIdentities are the users the credentials of a cluster's current
// and retired endpoints authenticate as, as far as their claims tell.
// unknown is true when the current credential's claims do not say.
func (b *backend) storedIdentities(ctx context.Context, s logical.Storage, cluster string, cfg *clusterConfig) (users []string, unknown bool, err error) {
	if cfg != nil {
		user, ok := credentialUser(cfg, b.inCluster)
		if ok {
			users = append(users, user)
		}
		unknown = !ok
	}
	retired, err := listRetiredEndpoints(ctx, s, cluster)
	if err != nil {
		return nil, false, err
	}
	for _, r := range retired {
		if user, ok := credentialUser(&r.Config, b.inCluster); ok {
			users = append(users, user)
		}
	}
	return users, unknown, nil
}

// selfIdentity is what a cached client knows about whom the plugin is on
// its cluster. The client is dropped whenever the cluster entry (and with
// it the list of retired endpoints) changes, so the answer is kept for the
// client's life.
type selfIdentity struct {
	mu    sync.Mutex
	users []string
	known bool
	// tokenRestricted remembers, per namespace, when the plugin was last
	// found unable to mint tokens for an unnamed service account there.
	tokenRestricted sync.Map
	// boundRoleClean remembers, per existing Role or ClusterRole, when it
	// was last found to grant none of the plugin's own rights.
	boundRoleClean sync.Map
}

// selfUsers returns the identities of the cluster's current and retired
// credentials; when the current credential's claims are silent it asks
// the API server (SelfSubjectReview) and fails closed if it cannot.
func (b *backend) selfUsers(ctx context.Context, s logical.Storage, client *clusterClient) ([]string, error) {
	id := &client.self
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.known {
		return id.users, nil
	}
	cfg, err := getCluster(ctx, s, client.cluster)
	if err != nil {
		return nil, err
	}
	users, unknown, err := b.storedIdentities(ctx, s, client.cluster, cfg)
	if err != nil {
		return nil, err
	}
	if unknown || cfg == nil || cfg.endpointID() != client.endpoint.ID {
		user, err := client.api.WhoAmI(ctx)
		if err != nil {
			return nil, fmt.Errorf("asking the API server of cluster %q whom the plugin's credential authenticates as: %w", client.cluster, err)
		}
		users = append(users, user)
	}
	id.users, id.known = users, true
	return users, nil
}

// errOwnIdentity refuses a role naming the plugin's own service account.
func errOwnIdentity(roleName string, role *roleEntry) error {
	return userError{fmt.Errorf("role %q names service account %s/%s, which is the identity of the plugin's own credential on cluster %q: the plugin never issues its own identity (it could mint tokens for every role and delete other leases' Secrets); use a service account of its own for the role",
		roleName, role.ServiceAccountNamespace, role.ServiceAccountName, role.Cluster)}
}

// checkNotSelf refuses, at role write, an existing-account role whose
// service account is the identity of its cluster's current or retired
// credential, as far as stored claims tell; issue checks again with the
// API server's answer.
func (b *backend) checkNotSelf(ctx context.Context, s logical.Storage, roleName string, role *roleEntry, cfg *clusterConfig) error {
	if role.ephemeral() {
		return nil
	}
	users, _, err := b.storedIdentities(ctx, s, role.Cluster, cfg)
	if err != nil {
		return err
	}
	if slices.Contains(users, serviceAccountUser(role.ServiceAccountNamespace, role.ServiceAccountName)) {
		return errOwnIdentity(roleName, role)
	}
	return nil
}

// tokenScopeTTL is how long an answer about the plugin's rights (its token
// right's scope, a bound role's rules) is trusted.
const tokenScopeTTL = time.Minute

// checkGrantable is the issue-time half: the role's service account is not
// the plugin's own, and the plugin's right to mint tokens in its namespace
// names the service accounts it covers; a role binding an existing Role or
// ClusterRole does not bind one that grants the plugin's own rights.
func (b *backend) checkGrantable(ctx context.Context, s logical.Storage, client *clusterClient, roleName string, role *roleEntry, namespaces []string) error {
	if role.mode() == modeExistingRole {
		return b.checkBoundRole(ctx, client, roleName, role, namespaces)
	}
	if role.ephemeral() {
		return nil
	}
	users, err := b.selfUsers(ctx, s, client)
	if err != nil {
		return err
	}
	if slices.Contains(users, serviceAccountUser(role.ServiceAccountNamespace, role.ServiceAccountName)) {
		return errOwnIdentity(roleName, role)
	}
	unrestricted, err := b.mintsAnyToken(ctx, client, role.ServiceAccountNamespace)
	if err != nil {
		return err
	}
	if unrestricted {
		return errUnrestrictedTokens(roleName, role)
	}
	return nil
}

func errUnrestrictedTokens(roleName string, role *roleEntry) error {
	ns := role.ServiceAccountNamespace
	return userError{fmt.Errorf("role %q: in namespace %q the plugin may create tokens for any service account (its create serviceaccounts/token right lists no resourceNames), so a role writer could obtain any identity there; existing-account roles are issued only where that right names the service accounts (resourceNames: [%s]), see deploy/token-requester.yaml",
		roleName, ns, role.ServiceAccountName)}
}

// mintsAnyToken asks whether the plugin may create a token for a service
// account it was not granted by name in ns. A "no" (the role may issue) is
// remembered for a minute, like the revocability check; a "yes" is asked
// again, so a narrowed RBAC takes effect at once.
func (b *backend) mintsAnyToken(ctx context.Context, client *clusterClient, ns string) (bool, error) {
	if checked, ok := client.self.tokenRestricted.Load(ns); ok && time.Since(checked.(time.Time)) < tokenScopeTTL {
		return false, nil
	}
	// An empty name matches only rules without resourceNames.
	allowed, err := client.api.Allowed(ctx, anyTokenAttributes(ns))
	if err != nil {
		return false, fmt.Errorf("checking whether the plugin may create tokens for any service account in namespace %q: %w", ns, err)
	}
	if !allowed {
		client.self.tokenRestricted.Store(ns, time.Now())
	}
	return allowed, nil
}

func anyTokenAttributes(ns string) authorizationv1.ResourceAttributes {
	return kindAccess("create", kindServiceAccount, "token", "", ns)
}

// checkBoundRole refuses to bind an existing Role or ClusterRole that
// grants a right of the plugin's own work (pluginOnlyRight). Kubernetes
// lets the plugin bind any role whose rights it holds, and it always holds
// those of its own Roles: without this check a roles/ writer naming the
// plugin's Role would get the plugin's rights in that namespace. A role
// the plugin may not read (or that does not exist) is left to Kubernetes'
// own bind and escalation checks. A clean answer is remembered for a
// minute.
func (b *backend) checkBoundRole(ctx context.Context, client *clusterClient, roleName string, role *roleEntry, namespaces []string) error {
	if role.KubernetesRoleType == kindClusterRole {
		namespaces = []string{""}
	}
	for _, ns := range namespaces {
		ref := objectRef{Kind: role.KubernetesRoleType, Namespace: ns, Name: role.KubernetesRoleName}
		key := ref.String()
		if checked, ok := client.self.boundRoleClean.Load(key); ok && time.Since(checked.(time.Time)) < tokenScopeTTL {
			continue
		}
		obj, err := client.api.GetObjectMeta(ctx, ref)
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s to check what a lease would be bound to: %w", ref, err)
		}
		var rules []rbacv1.PolicyRule
		switch r := obj.(type) {
		case *rbacv1.Role:
			rules = r.Rules
		case *rbacv1.ClusterRole:
			rules = r.Rules
		}
		for _, rule := range rules {
			if what := pluginOnlyRight(rule); what != "" {
				return userError{fmt.Errorf("role %q binds %s, which grants %s, a right the plugin holds for its own work: a lease could mint other identities or end other leases with it; bind a role without it", roleName, ref, what)}
			}
		}
		client.self.boundRoleClean.Store(key, time.Now())
	}
	return nil
}
