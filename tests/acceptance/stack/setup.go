package stack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Defaults of the standard setup.
const (
	Mount       = "scanner"
	PluginName  = "vault-plugin-scanner"
	ClusterName = "cluster-a"
	RoleName    = "cluster-a"
)

// Setup applies deploy/*.yaml, creates the token-requester JWT, registers
// and mounts the plugin, and writes clusters/cluster-a and roles/cluster-a.
func (s *Stack) Setup(ctx context.Context) error {
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"apply deploy/ manifests, create token-requester JWT", func(ctx context.Context) error {
			if err := s.First.setup(ctx, s.ManifestPaths()); err != nil {
				return err
			}
			s.TokenRequesterJWT = s.First.TokenRequesterJWT
			return nil
		}},
		{"register plugin", s.RegisterPlugin},
		{"enable secrets engine at scanner/", s.EnableMount},
		{"write scanner/clusters/cluster-a", func(ctx context.Context) error { return s.WriteCluster(ctx, ClusterName) }},
		{"write scanner/roles/cluster-a", func(ctx context.Context) error {
			return s.WriteRole(ctx, RoleName, "ttl=15m", "max_ttl=1h")
		}},
	}
	for _, st := range steps {
		t := time.Now()
		if err := st.f(ctx); err != nil {
			return fmt.Errorf("setup: %s: %w", st.name, err)
		}
		s.log.Logf("setup: %s (%s)", st.name, since(t))
	}
	return nil
}

// ManifestPaths are the shipped RBAC manifests, in apply order.
func (s *Stack) ManifestPaths() []string {
	return []string{
		filepath.Join(s.RepoRoot, "deploy", "example-scanner.yaml"),
		filepath.Join(s.RepoRoot, "deploy", "token-requester.yaml"),
	}
}

// ApplyManifests runs `kubectl apply -f` on the shipped manifests in the
// first cluster.
func (s *Stack) ApplyManifests(ctx context.Context) error {
	return s.First.ApplyManifests(ctx, s.ManifestPaths())
}

// RegisterPlugin copies the plugin binary into Vault's plugin directory and
// registers it with its SHA-256 and version.
func (s *Stack) RegisterPlugin(ctx context.Context) error {
	dst := filepath.Join(s.Vault.PluginDir, PluginName)
	sum, err := copyAndHash(s.Plugin.Binary, dst)
	if err != nil {
		return err
	}
	res, err := s.Vault.CLI(ctx, "plugin", "register", "-sha256="+sum, "-version="+s.Plugin.Version, "secret", PluginName)
	return cmdErr("vault plugin register", res, err)
}

// EnableMount runs `vault secrets enable -path=scanner vault-plugin-scanner`.
func (s *Stack) EnableMount(ctx context.Context) error {
	res, err := s.Vault.CLI(ctx, "secrets", "enable", "-path="+Mount, PluginName)
	return cmdErr("vault secrets enable", res, err)
}

// WriteCluster writes scanner/clusters/<name> pointing at the first
// cluster's API server with its token-requester JWT.
func (s *Stack) WriteCluster(ctx context.Context, name string) error {
	return s.WriteClusterFor(ctx, name, s.First)
}

// WriteClusterFor writes scanner/clusters/<name> pointing at c's API server
// (host, CA) with c's token-requester JWT.
func (s *Stack) WriteClusterFor(ctx context.Context, name string, c *KubeCluster) error {
	res, err := s.Vault.CLI(ctx, "write", Mount+"/clusters/"+name,
		"kubernetes_host="+c.Kube.URL,
		"kubernetes_ca_cert=@"+c.Kube.PKI.CAFile,
		"service_account_jwt="+c.TokenRequesterJWT)
	return cmdErr("vault write "+Mount+"/clusters/"+name, res, err)
}

// WriteRole writes scanner/roles/<name> for cluster-a and scanner-sa in
// scanner-namespace, plus extra key=value arguments.
func (s *Stack) WriteRole(ctx context.Context, name string, extra ...string) error {
	return s.WriteRoleOn(ctx, name, ClusterName, extra...)
}

// WriteRoleOn writes scanner/roles/<name> for scanner-sa in
// scanner-namespace on the clusters/ entry cluster, plus extra key=value
// arguments.
func (s *Stack) WriteRoleOn(ctx context.Context, name, cluster string, extra ...string) error {
	args := append([]string{"write", Mount + "/roles/" + name,
		"cluster=" + cluster,
		"service_account_name=" + ScannerSA,
		"service_account_namespace=" + ScannerNamespace}, extra...)
	res, err := s.Vault.CLI(ctx, args...)
	return cmdErr("vault write "+Mount+"/roles/"+name, res, err)
}

func copyAndHash(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
