package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// engine is one way of issuing credentials the benchmark compares.
type engine struct {
	name string
	// issue returns an id (a Vault lease ID, or the bare Secret) for revoke.
	issue  func(ctx context.Context) (string, error)
	revoke func(ctx context.Context, id string) error
	// leasePrefix is the engine's Vault lease prefix ("" for bare).
	leasePrefix string
	// k8sObjects counts what the engine created in Kubernetes and has not
	// deleted yet.
	k8sObjects func(ctx context.Context) (int, error)
}

const (
	enginePlugin      = "plugin"
	engineBare        = "bare"
	engineBuiltinSA   = "builtin-sa"
	engineBuiltinRole = "builtin-role"
	engineVaultRead   = "vault-read"

	bareLabel = "app.kubernetes.io/managed-by=vault-plugin-scanner-bench"
)

// newVaultClient returns a client that keeps a connection per benchmark
// client alive and never retries (a retry would hide an error).
func newVaultClient(addr, token string, conns int) (*vaultapi.Client, error) {
	cfg := vaultapi.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = 2 * time.Minute
	cfg.HttpClient.Transport.(*http.Transport).MaxIdleConnsPerHost = conns
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	c.ClearNamespace()
	return c, nil
}

// vaultEngine issues with GET path (body nil) or POST path with body, and
// revokes each lease with sys/leases/revoke (synchronous by default).
func vaultEngine(name string, vc *vaultapi.Client, path string, body map[string]any, k8sObjects func(context.Context) (int, error)) *engine {
	return &engine{
		name: name,
		issue: func(ctx context.Context) (string, error) {
			var sec *vaultapi.Secret
			var err error
			if body == nil {
				sec, err = vc.Logical().ReadWithContext(ctx, path)
			} else {
				sec, err = vc.Logical().WriteWithContext(ctx, path, body)
			}
			if err != nil {
				return "", err
			}
			if sec == nil || sec.LeaseID == "" {
				return "", fmt.Errorf("%s: no lease in the response", path)
			}
			if tok, _ := sec.Data["service_account_token"].(string); tok == "" {
				return sec.LeaseID, fmt.Errorf("%s: no service_account_token in the response", path)
			}
			return sec.LeaseID, nil
		},
		revoke: func(ctx context.Context, lease string) error {
			return vc.Sys().RevokeWithContext(ctx, lease)
		},
		leasePrefix: path,
		k8sObjects:  k8sObjects,
	}
}

// bareEngine makes the two API calls the plugin makes per credential
// (Secret create, TokenRequest bound to it) and the one per revoke, with
// client-go and the plugin's own token-requester credential, unthrottled.
func bareEngine(s *stack.Stack, admin kubernetes.Interface) (*engine, error) {
	cfg := s.Kube.RESTConfig(s.TokenRequesterJWT)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	key, value, _ := strings.Cut(bareLabel, "=")
	ns := stack.ScannerNamespace
	immutable := true
	expiration := int64(15*60 + 30) // what the plugin asks for a 15m lease
	return &engine{
		name: engineBare,
		issue: func(ctx context.Context) (string, error) {
			sec, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					GenerateName: "bench-bare-",
					Labels:       map[string]string{key: value},
					Annotations: map[string]string{
						"vault-plugin-scanner-bench/role":       stack.RoleName,
						"vault-plugin-scanner-bench/cluster":    stack.ClusterName,
						"vault-plugin-scanner-bench/expires-at": time.Now().Add(15 * time.Minute).UTC().Format(time.RFC3339),
					},
				},
				Type:      corev1.SecretTypeOpaque,
				Immutable: &immutable,
			}, metav1.CreateOptions{})
			if err != nil {
				return "", err
			}
			id := sec.Name + "/" + string(sec.UID)
			tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, stack.ScannerSA, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{
					ExpirationSeconds: &expiration,
					BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: sec.Name, UID: sec.UID},
				},
			}, metav1.CreateOptions{})
			if err == nil && tr.Status.Token == "" {
				err = fmt.Errorf("TokenRequest returned no token")
			}
			return id, err
		},
		revoke: func(ctx context.Context, id string) error {
			name, uid, _ := strings.Cut(id, "/")
			u := types.UID(uid)
			return cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &u}})
		},
		k8sObjects: countSecrets(admin, bareLabel),
	}, nil
}

// vaultReadEngine lists scanner/roles/: Vault's HTTP handling, the gRPC hop
// to the plugin and one storage list, without a lease or any Kubernetes
// call. It is the floor under every plugin request. (A LIST, so Vault's
// telemetry keeps it apart from the creds/ reads.)
func vaultReadEngine(vc *vaultapi.Client) *engine {
	path := stack.Mount + "/roles/"
	return &engine{
		name: engineVaultRead,
		issue: func(ctx context.Context) (string, error) {
			sec, err := vc.Logical().ListWithContext(ctx, path)
			if err == nil && sec == nil {
				err = fmt.Errorf("%s: no roles", path)
			}
			return "", err
		},
		revoke: func(context.Context, string) error { return nil },
	}
}

func countSecrets(admin kubernetes.Interface, selector string) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		l, err := admin.CoreV1().Secrets(stack.ScannerNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return 0, err
		}
		return len(l.Items), nil
	}
}

// leftovers describes what an engine left behind after its leases were
// revoked: Vault leases under its prefix, irrevocable leases anywhere,
// Kubernetes objects. Empty when clean.
func leftovers(ctx context.Context, vc *vaultapi.Client, e *engine) (string, error) {
	var out []string
	if e.leasePrefix != "" {
		l, err := vc.Logical().ListWithContext(ctx, "sys/leases/lookup/"+e.leasePrefix+"/")
		if err != nil {
			return "", fmt.Errorf("listing leases: %w", err)
		}
		if l != nil {
			if keys, _ := l.Data["keys"].([]any); len(keys) > 0 {
				out = append(out, fmt.Sprintf("%d leases under %s", len(keys), e.leasePrefix))
			}
		}
	}
	n, err := irrevocable(ctx, vc)
	if err != nil {
		return "", err
	}
	if n > 0 {
		out = append(out, fmt.Sprintf("%d irrevocable leases", n))
	}
	if e.k8sObjects != nil {
		if n, err = e.k8sObjects(ctx); err != nil {
			return "", err
		} else if n > 0 {
			out = append(out, fmt.Sprintf("%d Kubernetes objects", n))
		}
	}
	return strings.Join(out, ", "), nil
}

// irrevocable is sys/leases/count?type=irrevocable.
func irrevocable(ctx context.Context, vc *vaultapi.Client) (int, error) {
	sec, err := vc.Logical().ReadWithDataWithContext(ctx, "sys/leases/count", map[string][]string{"type": {"irrevocable"}})
	if err != nil {
		return 0, fmt.Errorf("sys/leases/count: %w", err)
	}
	if sec == nil {
		return 0, nil
	}
	n, ok := sec.Data["lease_count"].(json.Number)
	if !ok {
		return 0, fmt.Errorf("sys/leases/count: unexpected lease_count %v", sec.Data["lease_count"])
	}
	c, err := n.Int64()
	return int(c), err
}
