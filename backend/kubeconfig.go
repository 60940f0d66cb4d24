package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
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
		for _, env := range p.Exec.Env {
			values = append(values, env.Name, env.Value)
		}
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

// The credential plugin a token-free kubeconfig runs: the vault CLI or
// OpenBao's bao, which take the same arguments. Whoever reads such a
// kubeconfig runs its command (it is often synced into a Secret and read
// by someone else), so only these two are ever named: a bare name, found
// on the reader's PATH, or, from a cluster entry only, an absolute path
// whose base name is one of them.
const (
	vaultCommand = "vault"
	baoCommand   = "bao"

	maxExecCommandBytes = 256
)

// execCommandPath matches a clean absolute path of plain characters; the
// base name is checked separately.
var execCommandPath = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`)

// validateExecCommand checks a credential plugin command; allowPath admits
// an absolute path (a cluster entry's kubeconfig_exec_command), otherwise
// only the bare names vault and bao pass (a request's exec_command).
func validateExecCommand(field, command string, allowPath bool) error {
	if command == vaultCommand || command == baoCommand {
		return nil
	}
	if !allowPath {
		return fmt.Errorf("%s must be %q or %q (found on the reader's PATH); an absolute path can only be set by the cluster entry's kubeconfig_exec_command", field, vaultCommand, baoCommand)
	}
	base := path.Base(command)
	switch {
	case len(command) > maxExecCommandBytes:
		return fmt.Errorf("%s is %d bytes; at most %d are allowed", field, len(command), maxExecCommandBytes)
	case !execCommandPath.MatchString(command) || path.Clean(command) != command || (base != vaultCommand && base != baoCommand):
		return fmt.Errorf("%s must be %q, %q, or a clean absolute path (letters, digits, '.', '_', '-') whose last element is one of them, such as /usr/local/bin/bao (got %q)", field, vaultCommand, baoCommand, clip(command))
	}
	// Where anyone on the reading machine may place a program named vault.
	for _, dir := range []string{"/tmp/", "/var/tmp/", "/dev/shm/"} {
		if strings.HasPrefix(command, dir) {
			return fmt.Errorf("%s must not point under %s, where anyone on the reading machine may place a program named %s", field, dir, base)
		}
	}
	return nil
}

// execCLIEnv names the environment variables the command's CLI reads.
type execCLIEnv struct {
	cli, addr, token string
	// namespace are the variables pinned to the mount's namespace. bao
	// reads BAO_* first and falls back to VAULT_* when BAO_* is unset,
	// and in some releases also when it is empty: both are pinned, so an
	// empty (root) value never lets a VAULT_NAMESPACE set for other work
	// through.
	namespace []string
}

func execCLIEnvFor(command string) execCLIEnv {
	if path.Base(command) == baoCommand {
		return execCLIEnv{cli: baoCommand, addr: "BAO_ADDR", token: "BAO_TOKEN", namespace: []string{"BAO_NAMESPACE", "VAULT_NAMESPACE"}}
	}
	return execCLIEnv{cli: vaultCommand, addr: "VAULT_ADDR", token: "VAULT_TOKEN", namespace: []string{"VAULT_NAMESPACE"}}
}

// namespaceEnv pins every namespace variable of the CLI to namespace.
func (e execCLIEnv) namespaceEnv(namespace string) []clientcmdapiv1.ExecEnvVar {
	env := make([]clientcmdapiv1.ExecEnvVar, 0, len(e.namespace))
	for _, name := range e.namespace {
		env = append(env, clientcmdapiv1.ExecEnvVar{Name: name, Value: namespace})
	}
	return env
}
