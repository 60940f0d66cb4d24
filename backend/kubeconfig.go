package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"

	yaml "go.yaml.in/yaml/v2"
	clientcmdapiv1 "k8s.io/client-go/tools/clientcmd/api/v1"
)

// kubeconfigParams is what one issued kubeconfig carries.
type kubeconfigParams struct {
	ClusterName   string
	Server        string
	CACert        string
	TLSServerName string
	UserName      string
	// The user authenticates with Token, or, when Exec is set (and Token
	// is empty), by running Exec's command (a credential plugin).
	Token     string
	Exec      *clientcmdapiv1.ExecConfig
	Namespace string
}

// buildKubeconfig returns the kubeconfig as YAML and as single-line JSON
// (the form CI log maskers handle as one value).
//
// It fills the v1 wire type directly (no scheme conversion) and makes the
// YAML from a generic decode of the JSON with the YAML library
// sigs.k8s.io/yaml uses; the result is byte for byte what clientcmd.Write
// produces, at about half the cost of its JSON-to-YAML re-parse, the
// plugin's largest own CPU cost per credential.
func buildKubeconfig(p kubeconfigParams) (yamlOut, jsonOut string, err error) {
	// YAML cannot carry control characters (the YAML library would write
	// them raw); the plugin's inputs, validated names, URLs and JWTs, never
	// hold any.
	values := []string{p.ClusterName, p.Server, p.TLSServerName, p.UserName, p.Token, p.Namespace}
	user := clientcmdapiv1.AuthInfo{Token: p.Token}
	if p.Exec != nil {
		if p.Token != "" {
			return "", "", errors.New("a kubeconfig user has either a token or an exec credential plugin, not both")
		}
		values = append(append(values, p.Exec.Command), p.Exec.Args...)
		user = clientcmdapiv1.AuthInfo{Exec: p.Exec}
	}
	for _, v := range values {
		if strings.ContainsFunc(v, unicode.IsControl) {
			return "", "", errors.New("kubeconfig values must not contain control characters")
		}
	}
	cfg := clientcmdapiv1.Config{
		APIVersion: "v1",
		Kind:       "Config",
		Clusters: []clientcmdapiv1.NamedCluster{{Name: p.ClusterName, Cluster: clientcmdapiv1.Cluster{
			Server:                   p.Server,
			CertificateAuthorityData: []byte(p.CACert),
			TLSServerName:            p.TLSServerName,
		}}},
		AuthInfos: []clientcmdapiv1.NamedAuthInfo{{Name: p.UserName, AuthInfo: user}},
		Contexts: []clientcmdapiv1.NamedContext{{Name: p.ClusterName, Context: clientcmdapiv1.Context{
			Cluster:   p.ClusterName,
			AuthInfo:  p.UserName,
			Namespace: p.Namespace,
		}}},
		CurrentContext: p.ClusterName,
	}
	j, err := json.Marshal(&cfg)
	if err != nil {
		return "", "", fmt.Errorf("encoding kubeconfig as JSON: %w", err)
	}
	// A kubeconfig has no numbers, so decoding into interface{} loses
	// nothing (the exec user's booleans and null env survive too); maps come out with sorted keys, as from JSONToYAML.
	var doc interface{}
	if err := json.Unmarshal(j, &doc); err != nil {
		return "", "", fmt.Errorf("decoding kubeconfig JSON: %w", err)
	}
	y, err := yaml.Marshal(doc)
	if err != nil {
		return "", "", fmt.Errorf("encoding kubeconfig as YAML: %w", err)
	}
	return string(y), string(j), nil
}
