package backend

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	clientcmdapiv1 "k8s.io/client-go/tools/clientcmd/api/v1"
)

const (
	kubeconfigHelpSynopsis    = "A token-free kubeconfig whose user runs the vault (or bao) CLI as its credential plugin."
	kubeconfigHelpDescription = `
Reading kubeconfig/<role> returns a kubeconfig (fields kubeconfig, YAML, and
kubeconfig_json) with the role's cluster and namespace and a user whose exec
credential plugin runs

    vault read -format=table -field=exec_credential <mount>/creds/<role> [ttl=...] [kubernetes_namespace=... | kubernetes_namespaces=...] [targets=... | target_selector=...]

so every process that uses it fetches its own short-lived credential when it
starts, and again when that credential's lease ends or the API server answers
401. It holds no token and issues no lease; it is safe to hand out. The
process needs VAULT_ADDR and a VAULT_TOKEN (or ~/.vault-token) allowed to
read creds/<role> (BAO_ADDR and BAO_TOKEN for bao). Optional parameters,
passed on to creds/<role> and checked as creds checks them: ttl,
kubernetes_namespace or kubernetes_namespaces (ephemeral roles), targets or
target_selector (roles scoped to targets; resolved again at every fetch).

exec_command picks the CLI: vault or bao (OpenBao), found on the reader's
PATH; the cluster's kubeconfig_exec_command may name either, or an absolute
path to either, as the default. The exec environment sets VAULT_NAMESPACE
(for bao BAO_NAMESPACE and VAULT_NAMESPACE): to vault_namespace, the namespace the mount lives
in, with the creds/ path relative to it; without it, empty, with the path
from the root namespace (namespaces included), so a namespace the reader
set for other work is never prefixed twice.
`
)

func pathKubeconfig(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "kubeconfig/" + namePathPattern,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "exec-kubeconfig",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeString, Description: "Name of the role.", Required: true},
			"ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "Passed to creds/<role>: the TTL of each credential the kubeconfig fetches. Default: the role's ttl.",
			},
			"kubernetes_namespace": {
				Type:        framework.TypeString,
				Description: "Ephemeral roles, passed to creds/<role>: the namespace of each credential, and the context's. Default: the role's only allowed namespace.",
			},
			"kubernetes_namespaces": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Ephemeral roles, passed to creds/<role>: several namespaces for each credential; the context uses the first.",
			},
			"targets": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Roles scoped to targets, passed to creds/<role>: the pods each credential names (resolved again at each fetch); the context uses the first's namespace.",
			},
			"target_selector": {
				Type:        framework.TypeString,
				Description: "Roles scoped to targets, passed to creds/<role>: a label selector resolved again at each fetch, so later credentials may cover other pods.",
			},
			"exec_command": {
				Type:        framework.TypeString,
				Description: "The CLI the kubeconfig runs: vault or bao (OpenBao), found on the reader's PATH. Default: the cluster's kubeconfig_exec_command, else vault.",
			},
			"vault_namespace": {
				Type:        framework.TypeString,
				Description: "The Vault or OpenBao namespace this mount lives in (as in X-Vault-Namespace), which the kubeconfig sets as VAULT_NAMESPACE (for bao also BAO_NAMESPACE) with the creds/ path relative to it. Default: the namespace variable set empty and the path from the root namespace, which the server resolves alike.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			// No lease, no token, no Kubernetes call: a standby answers it.
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.forRole(b.execKubeconfig),
				Summary:      "Return a kubeconfig that fetches credentials from creds/<role> on demand.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
			},
		},
		HelpSynopsis:    kubeconfigHelpSynopsis,
		HelpDescription: kubeconfigHelpDescription,
	}}
}

func (b *backend) execKubeconfig(ctx context.Context, req *logical.Request, d *framework.FieldData, name string, role *roleEntry) (*logical.Response, error) {
	if req.MountPoint == "" {
		return nil, errors.New("the request carries no mount point, so the kubeconfig cannot name creds/")
	}
	// The same checks creds/ makes, so that a kubeconfig that would only
	// ever fail is refused now.
	ir, err := parseIssueRequest(name, role, d, b.System().MaxLeaseTTL())
	if err != nil {
		return nil, userError{err}
	}
	if role.mode() == modeTargets {
		// Checked offline; each credential the kubeconfig fetches resolves
		// the targets again.
		tr, err := parseTargets(name, role, d)
		if err != nil {
			return nil, err
		}
		for _, ns := range tr.bySelector {
			ir.warnings = append(ir.warnings, fmt.Sprintf("namespace %q is not listed by role %q; whether its labels match %s is checked when credentials are issued", ns, name, role.AllowedNamespaceSelector))
		}
		ir.namespace = tr.namespaces[0]
		if len(tr.named) > 0 {
			ir.namespace = tr.named[0].Namespace
		}
		ir.warnings = append(ir.warnings, "every credential this kubeconfig fetches resolves its targets again when it is issued: a named pod that is gone makes the fetch fail, and a target_selector may then match other pods")
	} else if role.ephemeral() {
		namespaces, bySelector, _, err := requestedNamespaces(name, role, d)
		if err != nil {
			return nil, err
		}
		// A namespace allowed only through the role's selector cannot be
		// checked without the API server: every creds read checks it.
		for _, ns := range bySelector {
			ir.warnings = append(ir.warnings, fmt.Sprintf("namespace %q is not listed by role %q; whether its labels match %s is checked when credentials are issued", ns, name, role.AllowedNamespaceSelector))
		}
		ir.namespace = namespaces[0]
	}
	client, err := b.client(ctx, req.Storage, role.Cluster)
	if err != nil {
		return nil, err
	}

	command, err := execCommand(client.endpoint, d)
	if err != nil {
		return nil, err
	}
	cliEnv := execCLIEnvFor(command)
	namespace, mountPath, err := splitMountNamespace(req.MountPoint, d.Get("vault_namespace").(string))
	if err != nil {
		return nil, userError{err}
	}
	credsPath := mountPath + "creds/" + name
	// -format=table: with VAULT_FORMAT=json in the environment, -field
	// would print the document as a quoted JSON string.
	args := []string{"read", "-format=table", "-field=exec_credential", credsPath}
	if v, ok := d.GetOk("ttl"); ok {
		args = append(args, "ttl="+(time.Duration(v.(int))*time.Second).String())
	}
	if ns := d.Get("kubernetes_namespace").(string); ns != "" {
		args = append(args, "kubernetes_namespace="+ns)
	}
	if list, ok := d.GetOk("kubernetes_namespaces"); ok {
		args = append(args, "kubernetes_namespaces="+strings.Join(list.([]string), ","))
	}
	if list, ok := d.GetOk("targets"); ok {
		args = append(args, "targets="+strings.Join(list.([]string), ","))
	}
	if sel, ok := d.GetOk("target_selector"); ok {
		// One argument, never through a shell: spaces need no quoting.
		args = append(args, "target_selector="+sel.(string))
	}
	params := client.endpoint.kubeconfigParams(role.Cluster, credsPath, role.kubeconfigNamespace(ir.namespace))
	params.Exec = &clientcmdapiv1.ExecConfig{
		APIVersion: "client.authentication.k8s.io/v1",
		Command:    command,
		Args:       args,
		// Always set, empty for the root namespace: a namespace the reader
		// set for other work would otherwise be prefixed to the path.
		Env:             cliEnv.namespaceEnv(namespace),
		InstallHint:     fmt.Sprintf("The %s CLI must be installed (%s), with %s and %s (or the token `%s login` stored) allowed to read %s.", cliEnv.cli, command, cliEnv.addr, cliEnv.token, cliEnv.cli, credsPath),
		InteractiveMode: clientcmdapiv1.NeverExecInteractiveMode,
	}
	kubeconfigYAML, kubeconfigJSON, err := buildKubeconfig(params)
	if err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: map[string]interface{}{
		"kubeconfig":      kubeconfigYAML,
		"kubeconfig_json": kubeconfigJSON,
	}}
	for _, w := range ir.warnings {
		resp.AddWarning(w)
	}
	return resp, nil
}

// execCommand is the credential plugin the kubeconfig runs: the request's
// exec_command (vault or bao), else the cluster's kubeconfig_exec_command
// (from the endpoint the client was built from), else vault.
func execCommand(ep *endpoint, d *framework.FieldData) (string, error) {
	if requested := d.Get("exec_command").(string); requested != "" {
		if err := validateExecCommand("exec_command", requested, false); err != nil {
			return "", userError{err}
		}
		return requested, nil
	}
	if ep.KubeconfigExecCommand == "" {
		return vaultCommand, nil
	}
	// Checked when written; checked again so an entry stored by hand or by
	// an older version never names another program.
	if err := validateExecCommand("the cluster's kubeconfig_exec_command", ep.KubeconfigExecCommand, true); err != nil {
		return "", err
	}
	return ep.KubeconfigExecCommand, nil
}

// maxNamespacePathBytes bounds vault_namespace.
const maxNamespacePathBytes = 256

var namespacePathPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)

// splitMountNamespace splits the mount's path into the namespace the
// caller names and the path within it. Vault and OpenBao give a plugin its
// mount's path from the root namespace (req.MountPoint, namespaces
// included) but not where the namespace ends, so only the caller can say;
// what it says must be a leading part of that path.
func splitMountNamespace(mountPoint, requested string) (namespace, mountPath string, err error) {
	ns := strings.Trim(requested, "/")
	if ns == "" {
		return "", mountPoint, nil
	}
	if len(ns) > maxNamespacePathBytes || !namespacePathPattern.MatchString(ns) || slices.Contains(strings.Split(ns, "/"), "..") {
		return "", "", fmt.Errorf("vault_namespace must be a namespace path such as team-a or team-a/ci (letters, digits, '.', '_', '-', at most %d bytes), got %q", maxNamespacePathBytes, clip(requested))
	}
	rest, ok := strings.CutPrefix(mountPoint, ns+"/")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("vault_namespace %q is not a namespace this mount lives in: its path from the root namespace is %q", clip(requested), mountPoint)
	}
	return ns, rest, nil
}
