package stack

import (
	"context"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Names used by the shipped manifests (deploy/) and the default setup.
const (
	ScannerNamespace   = "scanner-namespace"
	ScannerSA          = "scanner-sa"
	RequesterNamespace = "vault-plugin-scanner"
	RequesterSA        = "vault-plugin-scanner"
	RequesterRole      = "vault-plugin-scanner-token-requester"
	ManagedByLabel     = "app.kubernetes.io/managed-by=vault-plugin-scanner"
	RoleAnnotation     = "vault-plugin-scanner/role"
)

// KubeconfigYAML returns a kubeconfig for this API server authenticating
// with a bearer token, with a context in namespace ns.
func (k *KubeAPIServer) KubeconfigYAML(user, token, ns string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: k.URL, CertificateAuthorityData: k.PKI.CAPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "local", AuthInfo: user, Namespace: ns}
	cfg.CurrentContext = user
	return clientcmd.Write(*cfg)
}

// WriteKubeconfig writes a token kubeconfig to path with mode 0600.
func (k *KubeAPIServer) WriteKubeconfig(path, user, token, ns string) error {
	b, err := k.KubeconfigYAML(user, token, ns)
	if err != nil {
		return err
	}
	return WriteFile0600(path, b)
}

// WriteFile0600 writes data to path with mode 0600 (also when it existed).
func WriteFile0600(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}

// AdminClient returns a client-go clientset with the admin token.
func (k *KubeAPIServer) AdminClient() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(k.RESTConfig(k.AdminToken))
}

// RESTConfig returns a client-go config with a bearer token.
func (k *KubeAPIServer) RESTConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            k.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: k.PKI.CAPEM},
		QPS:             50,
		Burst:           100,
	}
}

// Kubectl runs kubectl with the given kubeconfig file.
func (s *Stack) Kubectl(ctx context.Context, kubeconfig string, args ...string) (CmdResult, error) {
	return s.First.Kubectl(ctx, kubeconfig, args...)
}

// KubectlAdmin runs kubectl as the first cluster's admin.
func (s *Stack) KubectlAdmin(ctx context.Context, args ...string) (CmdResult, error) {
	return s.First.KubectlAdmin(ctx, args...)
}

// ManagedSecrets lists the plugin's bound Secrets in the scanner namespace;
// with role != "" only those annotated with that role.
func (s *Stack) ManagedSecrets(ctx context.Context, role string) ([]corev1.Secret, error) {
	return s.managedSecretsIn(ctx, ScannerNamespace, role)
}

func (s *Stack) managedSecretsIn(ctx context.Context, namespace, role string) ([]corev1.Secret, error) {
	return s.First.ManagedSecrets(ctx, namespace, role)
}

// TokenStatus returns the HTTP status of listing pods in the scanner
// namespace with token: 200 while valid, 401 once rejected.
func (s *Stack) TokenStatus(ctx context.Context, token string) (int, error) {
	return s.tokenStatusIn(ctx, ScannerNamespace, token)
}

func (s *Stack) tokenStatusIn(ctx context.Context, namespace, token string) (int, error) {
	return s.First.TokenStatus(ctx, namespace, token)
}
