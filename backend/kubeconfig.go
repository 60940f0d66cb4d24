package backend

import (
	"encoding/json"
	"fmt"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	clientcmdlatest "k8s.io/client-go/tools/clientcmd/api/latest"
	clientcmdapiv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// kubeconfigParams is what one issued kubeconfig carries.
type kubeconfigParams struct {
	ClusterName   string
	Server        string
	CACert        string
	TLSServerName string
	UserName      string
	Token         string
	Namespace     string
}

// buildKubeconfig returns the kubeconfig as YAML and as single-line JSON
// (the form CI log maskers handle as one value).
func buildKubeconfig(p kubeconfigParams) (yamlOut, jsonOut string, err error) {
	cfg := clientcmdapi.NewConfig()
	cluster := clientcmdapi.NewCluster()
	cluster.Server = p.Server
	cluster.CertificateAuthorityData = []byte(p.CACert)
	cluster.TLSServerName = p.TLSServerName
	cfg.Clusters[p.ClusterName] = cluster

	user := clientcmdapi.NewAuthInfo()
	user.Token = p.Token
	cfg.AuthInfos[p.UserName] = user

	kctx := clientcmdapi.NewContext()
	kctx.Cluster = p.ClusterName
	kctx.AuthInfo = p.UserName
	kctx.Namespace = p.Namespace
	cfg.Contexts[p.ClusterName] = kctx
	cfg.CurrentContext = p.ClusterName

	// Convert once to the v1 wire type (which sets apiVersion and kind) and
	// derive both encodings from its JSON, as clientcmd.Write does for YAML.
	v1, err := clientcmdlatest.Scheme.ConvertToVersion(cfg, clientcmdapiv1.SchemeGroupVersion)
	if err != nil {
		return "", "", fmt.Errorf("converting kubeconfig: %w", err)
	}
	j, err := json.Marshal(v1)
	if err != nil {
		return "", "", fmt.Errorf("encoding kubeconfig as JSON: %w", err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return "", "", fmt.Errorf("encoding kubeconfig as YAML: %w", err)
	}
	return string(y), string(j), nil
}
