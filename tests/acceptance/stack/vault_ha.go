package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Names of the Kubernetes objects the Vault HA test issues for: a namespace
// of its own, so its bound Secrets never mix with those of the shared Vault.
const (
	HANamespace = "scanner-ha"
	HAScannerSA = "scanner-ha-sa"
	HACluster   = "cluster-ha"
)

// haManifest gives the token requester what it needs in HANamespace (like
// deploy/token-requester.yaml) and lets HAScannerSA list pods there.
var haManifest = fmt.Sprintf(`apiVersion: v1
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
  name: %[3]s
  namespace: %[1]s
rules:
  - apiGroups: [""]
    resources: ["serviceaccounts/token"]
    resourceNames: ["%[2]s"]
    verbs: ["create"]
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["create", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: %[3]s
  namespace: %[1]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: %[3]s
subjects:
  - kind: ServiceAccount
    name: %[4]s
    namespace: %[5]s
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: scanner
  namespace: %[1]s
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: scanner
  namespace: %[1]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: scanner
subjects:
  - kind: ServiceAccount
    name: %[2]s
    namespace: %[1]s
`, HANamespace, HAScannerSA, RequesterRole, RequesterSA, RequesterNamespace)

// HANode is one server of a VaultHA cluster. Its embedded Vault has the
// cluster's root token and unseal key once the cluster is up.
type HANode struct {
	*Vault
	NodeID      string
	ClusterAddr string // https://127.0.0.1:CPORT (raft and request forwarding)
	Killed      bool
}

// VaultHA is a cluster of `vault server`s with integrated (raft) storage on
// loopback: node 1 is initialised, the others join it with retry_join and
// are unsealed with the same key.
type VaultHA struct {
	Dir   string
	Nodes []*HANode

	RootToken, UnsealKey string

	log Logger
}

// StartVaultHA starts n Vault servers with raft storage under dir,
// initialises the first (one key share), unseals all of them and waits until
// the raft configuration lists n voters. On error every node is stopped and
// the logs are kept.
func StartVaultHA(ctx context.Context, bin, dir string, n int, log Logger) (h *VaultHA, err error) {
	h = &VaultHA{Dir: dir, log: log}
	defer func() {
		if err != nil {
			h.Stop()
			err = fmt.Errorf("%w\nlogs kept: %s", err, strings.Join(h.LogFiles(), " "))
		}
	}()
	for i := 1; i <= n; i++ {
		port, err := FreePort()
		if err != nil {
			return h, err
		}
		cport, err := FreePort()
		if err != nil {
			return h, err
		}
		nd := filepath.Join(dir, fmt.Sprintf("node%d", i))
		v := &Vault{
			Addr:       "http://127.0.0.1:" + strconv.Itoa(port),
			Bin:        bin,
			Dir:        nd,
			ConfigPath: filepath.Join(nd, "vault.hcl"),
			PluginDir:  filepath.Join(nd, "plugins"),
			LogPath:    filepath.Join(nd, "vault.log"),
			log:        log,
		}
		node := &HANode{Vault: v, NodeID: fmt.Sprintf("node%d", i), ClusterAddr: "https://127.0.0.1:" + strconv.Itoa(cport)}
		h.Nodes = append(h.Nodes, node)
	}
	leaderAPI := h.Nodes[0].Addr
	for i, node := range h.Nodes {
		for _, d := range []string{node.PluginDir, filepath.Join(node.Dir, "raft")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return h, err
			}
		}
		join := ""
		if i > 0 {
			join = fmt.Sprintf("  retry_join {\n    leader_api_addr = %q\n  }\n", leaderAPI)
		}
		cfg := fmt.Sprintf(`storage "raft" {
  path                   = %q
  node_id                = %q
  performance_multiplier = 1
%s}
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}
api_addr         = %q
cluster_addr     = %q
plugin_directory = %q
disable_mlock    = true
log_level        = "debug"
ui               = false
`, filepath.Join(node.Dir, "raft"), node.NodeID, join,
			strings.TrimPrefix(node.Addr, "http://"), strings.TrimPrefix(node.ClusterAddr, "https://"),
			node.Addr, node.ClusterAddr, node.PluginDir)
		if err := os.WriteFile(node.ConfigPath, []byte(cfg), 0o600); err != nil {
			return h, err
		}
	}
	t := time.Now()
	for _, node := range h.Nodes {
		if err := node.start(ctx); err != nil {
			return h, fmt.Errorf("%s: %w", node.NodeID, err)
		}
	}
	log.Logf("vault-ha: %d servers listening (%s)", n, since(t))

	// Node 1: init, unseal, wait until active.
	t = time.Now()
	first := h.Nodes[0]
	if err := first.initAndUnseal(ctx); err != nil {
		return h, fmt.Errorf("%s: %w", first.NodeID, err)
	}
	h.RootToken, h.UnsealKey = first.RootToken, first.UnsealKey
	for _, node := range h.Nodes {
		node.RootToken, node.UnsealKey = h.RootToken, h.UnsealKey
	}
	log.Logf("vault-ha: %s initialised and active at %s (%s)", first.NodeID, first.Addr, since(t))

	// Promote joined servers to voters quickly.
	c, err := first.Client()
	if err != nil {
		return h, err
	}
	if _, err := c.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration", map[string]any{
		"server_stabilization_time": "2s",
		"cleanup_dead_servers":      false,
	}); err != nil {
		return h, fmt.Errorf("autopilot configuration: %w", err)
	}

	// The others join through retry_join; they finish joining when unsealed.
	for _, node := range h.Nodes[1:] {
		t := time.Now()
		if err := h.unsealJoiner(ctx, node); err != nil {
			return h, err
		}
		log.Logf("vault-ha: %s joined and unsealed as standby (%s)", node.NodeID, since(t))
	}

	t = time.Now()
	var voters []string
	_, err = Poll(ctx, 90*time.Second, 500*time.Millisecond, func() (bool, error) {
		var err error
		voters, err = h.Voters(ctx, first)
		return err == nil && len(voters) == n, err
	})
	if err != nil {
		return h, fmt.Errorf("raft configuration: want %d voters, have %v: %w", n, voters, err)
	}
	log.Logf("vault-ha: raft configuration has %d voters %v (%s)", n, voters, since(t))
	return h, nil
}

func (h *VaultHA) unsealJoiner(ctx context.Context, node *HANode) error {
	c, err := node.Client()
	if err != nil {
		return err
	}
	var last string
	_, err = Poll(ctx, 90*time.Second, 500*time.Millisecond, func() (bool, error) {
		if exited, werr := node.Proc.Exited(); exited {
			return false, Permanent(fmt.Errorf("vault exited: %v", werr))
		}
		s, err := c.Sys().SealStatusWithContext(ctx)
		if err != nil {
			return false, err
		}
		last = fmt.Sprintf("initialized=%v sealed=%v", s.Initialized, s.Sealed)
		if s.Sealed {
			if _, err := c.Sys().UnsealWithContext(ctx, h.UnsealKey); err != nil {
				return false, err
			}
			return false, nil
		}
		hs, err := c.Sys().HealthWithContext(ctx)
		if err != nil {
			return false, err
		}
		last = fmt.Sprintf("health initialized=%v sealed=%v standby=%v", hs.Initialized, hs.Sealed, hs.Standby)
		return hs.Initialized && !hs.Sealed && hs.Standby, nil
	})
	if err != nil {
		return fmt.Errorf("%s: not an unsealed standby (last: %s): %w\n%s", node.NodeID, last, err, node.Proc.Tail(40))
	}
	return nil
}

// Voters returns the node ids of the voters in the raft configuration, read
// through node.
func (h *VaultHA) Voters(ctx context.Context, node *HANode) ([]string, error) {
	c, err := node.Client()
	if err != nil {
		return nil, err
	}
	sec, err := c.Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, errors.New("empty raft configuration")
	}
	cfg, _ := sec.Data["config"].(map[string]any)
	servers, _ := cfg["servers"].([]any)
	var out []string
	for _, s := range servers {
		m, _ := s.(map[string]any)
		if v, _ := m["voter"].(bool); v {
			id, _ := m["node_id"].(string)
			out = append(out, id)
		}
	}
	return out, nil
}

// Live returns the nodes not killed or stopped.
func (h *VaultHA) Live() []*HANode {
	var out []*HANode
	for _, n := range h.Nodes {
		if !n.Killed && n.Proc != nil {
			if exited, _ := n.Proc.Exited(); !exited {
				out = append(out, n)
			}
		}
	}
	return out
}

// Active asks every live node for sys/leader and returns the one that is the
// active node by its own account (and healthy as active), or nil.
func (h *VaultHA) Active(ctx context.Context) *HANode {
	for _, n := range h.Live() {
		c, err := n.Client()
		if err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		l, err := c.Sys().LeaderWithContext(rctx)
		if err != nil || !l.IsSelf {
			cancel()
			continue
		}
		hs, err := c.Sys().HealthWithContext(rctx)
		cancel()
		if err == nil && hs.Initialized && !hs.Sealed && !hs.Standby {
			return n
		}
	}
	return nil
}

// WaitActive polls until a live node is active and returns it and the time
// it took.
func (h *VaultHA) WaitActive(ctx context.Context, timeout time.Duration) (*HANode, time.Duration, error) {
	var active *HANode
	took, err := Poll(ctx, timeout, 100*time.Millisecond, func() (bool, error) {
		active = h.Active(ctx)
		return active != nil, nil
	})
	if err != nil {
		return nil, took, fmt.Errorf("no active node among %d live nodes: %w", len(h.Live()), err)
	}
	return active, took, nil
}

// Standbys returns the live nodes other than active.
func (h *VaultHA) Standbys(active *HANode) []*HANode {
	var out []*HANode
	for _, n := range h.Live() {
		if n != active {
			out = append(out, n)
		}
	}
	return out
}

// Kill sends SIGKILL to the node's process group (Vault and its plugin
// processes) and waits until Vault has exited.
func (h *VaultHA) Kill(node *HANode) {
	haKillGroup(node.Proc)
	node.Killed = true
	h.log.Logf("vault-ha: %s (pid %d) killed with SIGKILL", node.NodeID, node.Proc.Pid())
}

func haKillGroup(p *Process) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	p.logFile.Close()
}

// Stop stops every node (SIGTERM to its process group, SIGKILL after 10 s).
func (h *VaultHA) Stop() {
	for _, n := range h.Nodes {
		if n.Proc != nil {
			n.Proc.Stop(10 * time.Second)
		}
	}
}

// GroupsGone reports the nodes whose process group still has a member.
func (h *VaultHA) GroupsGone() error {
	var alive []string
	for _, n := range h.Nodes {
		if n.Proc == nil {
			continue
		}
		if err := syscall.Kill(-n.Proc.Pid(), 0); err == nil || !errors.Is(err, syscall.ESRCH) {
			alive = append(alive, fmt.Sprintf("%s (pgid %d: %v)", n.NodeID, n.Proc.Pid(), err))
		}
	}
	if len(alive) > 0 {
		return fmt.Errorf("process groups still alive: %s", strings.Join(alive, ", "))
	}
	return nil
}

// LogFiles lists the nodes' log files.
func (h *VaultHA) LogFiles() []string {
	var out []string
	for _, n := range h.Nodes {
		if fileExists(n.LogPath) {
			out = append(out, n.LogPath)
		}
	}
	return out
}

// DumpLogs logs the last lines of every node's log.
func (h *VaultHA) DumpLogs(log Logger, lines int) {
	for _, n := range h.Nodes {
		log.Logf("---- last %d lines of %s (%s) ----\n%s", lines, n.LogPath, n.NodeID, TailFile(n.LogPath, lines))
	}
}

// SetupVaultHA prepares HANamespace (service account, RBAC), copies the
// plugin into every node's plugin directory, registers and mounts it through
// the active node at scanner/, and writes clusters/cluster-ha pointing at
// this stack's API server with the stack's token-requester JWT.
func (s *Stack) SetupVaultHA(ctx context.Context, h *VaultHA, active *HANode) error {
	manifest := filepath.Join(h.Dir, "scanner-ha.yaml")
	if err := os.WriteFile(manifest, []byte(haManifest), 0o600); err != nil {
		return err
	}
	res, err := s.KubectlAdmin(ctx, "apply", "-f", manifest)
	if err := cmdErr("kubectl apply -f "+manifest, res, err); err != nil {
		return err
	}
	var sum string
	for _, n := range h.Nodes {
		if sum, err = copyAndHash(s.Plugin.Binary, filepath.Join(n.PluginDir, PluginName)); err != nil {
			return err
		}
	}
	res, err = active.CLI(ctx, "plugin", "register", "-sha256="+sum, "-version="+s.Plugin.Version, "secret", PluginName)
	if err := cmdErr("vault plugin register", res, err); err != nil {
		return err
	}
	res, err = active.CLI(ctx, "secrets", "enable", "-path="+Mount, PluginName)
	if err := cmdErr("vault secrets enable", res, err); err != nil {
		return err
	}
	res, err = active.CLI(ctx, "write", Mount+"/clusters/"+HACluster,
		"kubernetes_host="+s.Kube.URL,
		"kubernetes_ca_cert=@"+s.Kube.PKI.CAFile,
		"service_account_jwt="+s.TokenRequesterJWT)
	return cmdErr("vault write "+Mount+"/clusters/"+HACluster, res, err)
}

// WriteHARole writes scanner/roles/<name> on cluster-ha for HAScannerSA in
// HANamespace, through node.
func WriteHARole(ctx context.Context, node *HANode, name string, extra ...string) error {
	args := append([]string{"write", Mount + "/roles/" + name,
		"cluster=" + HACluster,
		"service_account_name=" + HAScannerSA,
		"service_account_namespace=" + HANamespace}, extra...)
	res, err := node.CLI(ctx, args...)
	return cmdErr("vault write "+Mount+"/roles/"+name, res, err)
}

// HASecrets lists the plugin's bound Secrets in HANamespace; with role != ""
// only those annotated with that role.
func (s *Stack) HASecrets(ctx context.Context, role string) ([]corev1.Secret, error) {
	return s.managedSecretsIn(ctx, HANamespace, role)
}

// HATokenStatus returns the HTTP status of listing pods in HANamespace with
// token: 200 while valid, 401 once rejected.
func (s *Stack) HATokenStatus(ctx context.Context, token string) (int, error) {
	return s.tokenStatusIn(ctx, HANamespace, token)
}
