package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

const (
	builtinMount     = "kubernetes"
	builtinNamespace = "vault-builtin-k8s"
	builtinSA        = "vault-builtin-k8s"
	builtinLabel     = "app.kubernetes.io/created-by=vault-plugin-secrets-kubernetes"
)

// builtinManifest gives Vault's built-in engine its own identity with what
// both modes need in scanner-namespace: tokens for any service account,
// create/delete service accounts and role bindings, and `bind` on the
// example scanner Role (RBAC escalation prevention).
var builtinManifest = fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: %[2]s
  namespace: %[1]s
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: %[2]s
  namespace: %[3]s
rules:
  - apiGroups: [""]
    resources: ["serviceaccounts"]
    verbs: ["create", "delete"]
  - apiGroups: [""]
    resources: ["serviceaccounts/token"]
    verbs: ["create"]
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["rolebindings"]
    verbs: ["create", "delete"]
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["roles"]
    resourceNames: ["scanner"]
    verbs: ["bind"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: %[2]s
  namespace: %[3]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: %[2]s
subjects:
  - kind: ServiceAccount
    name: %[2]s
    namespace: %[1]s
`, builtinNamespace, builtinSA, stack.ScannerNamespace)

// setupBuiltin mounts Vault's built-in kubernetes secrets engine against the
// same API server and writes its two roles: sa-mode (service_account_name,
// tokens for scanner-sa itself) and role-mode (kubernetes_role_name: a new
// ServiceAccount and RoleBinding to the Role `scanner` per lease).
func setupBuiltin(ctx context.Context, s *stack.Stack, vc *vaultapi.Client) error {
	path := filepath.Join(s.Dir, "bench-builtin-k8s.yaml")
	if err := os.WriteFile(path, []byte(builtinManifest), 0o600); err != nil {
		return err
	}
	if res, err := s.KubectlAdmin(ctx, "apply", "-f", path); err != nil || res.ExitCode != 0 {
		return fmt.Errorf("kubectl apply -f %s: %v %s", path, err, res)
	}
	res, err := s.KubectlAdmin(ctx, "create", "token", builtinSA, "-n", builtinNamespace, "--duration=24h")
	if err != nil || res.ExitCode != 0 {
		return fmt.Errorf("kubectl create token: %v %s", err, res)
	}
	jwt := strings.TrimSpace(res.Stdout)

	if err := vc.Sys().MountWithContext(ctx, builtinMount, &vaultapi.MountInput{Type: "kubernetes"}); err != nil {
		return fmt.Errorf("vault secrets enable kubernetes: %w", err)
	}
	writes := []struct {
		path string
		data map[string]any
	}{
		{builtinMount + "/config", map[string]any{
			"kubernetes_host":      s.Kube.URL,
			"kubernetes_ca_cert":   string(s.Kube.PKI.CAPEM),
			"service_account_jwt":  jwt,
			"disable_local_ca_jwt": true,
		}},
		{builtinMount + "/roles/sa-mode", map[string]any{
			"service_account_name":          stack.ScannerSA,
			"allowed_kubernetes_namespaces": stack.ScannerNamespace,
			"token_default_ttl":             "15m",
		}},
		{builtinMount + "/roles/role-mode", map[string]any{
			"kubernetes_role_name":          "scanner",
			"kubernetes_role_type":          "Role",
			"allowed_kubernetes_namespaces": stack.ScannerNamespace,
			"token_default_ttl":             "15m",
		}},
	}
	for _, w := range writes {
		if _, err := vc.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			return fmt.Errorf("vault write %s: %w", w.path, err)
		}
	}
	return nil
}

// builtinEngine issues with POST kubernetes/creds/<role>.
func builtinEngine(name, role string, vc *vaultapi.Client, admin kubernetes.Interface) *engine {
	return vaultEngine(name, vc, builtinMount+"/creds/"+role,
		map[string]any{"kubernetes_namespace": stack.ScannerNamespace},
		func(ctx context.Context) (int, error) {
			// role-mode's per-lease ServiceAccounts and RoleBindings.
			opts := metav1.ListOptions{LabelSelector: builtinLabel}
			sas, err := admin.CoreV1().ServiceAccounts(stack.ScannerNamespace).List(ctx, opts)
			if err != nil {
				return 0, err
			}
			rbs, err := admin.RbacV1().RoleBindings(stack.ScannerNamespace).List(ctx, opts)
			if err != nil {
				return 0, err
			}
			return len(sas.Items) + len(rbs.Items), nil
		})
}
