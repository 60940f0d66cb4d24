package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// Vault is a `vault server` (not -dev) with file or single-node raft
// storage, so it can be restarted with its data. It listens on loopback
// without TLS (Addr, what the tests and the CLI use) and with TLS (TLSAddr:
// an API server trusts the mount as a token issuer only over https).
type Vault struct {
	Addr       string // http://127.0.0.1:PORT
	TLSAddr    string // https://127.0.0.1:PORT, certificate from TLS
	TLS        *ServingCert
	RootToken  string
	UnsealKey  string
	Bin        string
	Dir        string
	ConfigPath string
	PluginDir  string
	LogPath    string
	Proc       *Process

	log Logger
}

func newVault(bin, dir, storage string, log Logger) (*Vault, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	tlsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	serving, err := newServingCert(filepath.Join(dir, "tls"), "vault")
	if err != nil {
		return nil, err
	}
	storageCfg, err := vaultStorageConfig(storage, filepath.Join(dir, "data"))
	if err != nil {
		return nil, err
	}
	v := &Vault{
		Addr:       "http://127.0.0.1:" + strconv.Itoa(port),
		TLSAddr:    "https://127.0.0.1:" + strconv.Itoa(tlsPort),
		TLS:        serving,
		Bin:        bin,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "vault.hcl"),
		PluginDir:  filepath.Join(dir, "plugins"),
		LogPath:    filepath.Join(dir, "vault.log"),
		log:        log,
	}
	for _, d := range []string{v.PluginDir, filepath.Join(dir, "data")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	cfg := fmt.Sprintf(`%s
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
listener "tcp" {
  address       = "127.0.0.1:%d"
  tls_cert_file = %q
  tls_key_file  = %q
}
plugin_directory = %q
api_addr         = %q
disable_mlock    = true
log_level        = "trace"
ui               = false
`, storageCfg, port, tlsPort, serving.CertFile, serving.KeyFile, v.PluginDir, v.Addr)
	if err := os.WriteFile(v.ConfigPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return v, nil
}

// vaultStorageConfig is the storage stanza for "file" (or "") and "raft".
// Raft needs a cluster address even alone; nothing ever dials it.
func vaultStorageConfig(kind, dataDir string) (string, error) {
	switch kind {
	case "", "file":
		return fmt.Sprintf("storage \"file\" {\n  path = %q\n}", dataDir), nil
	case "raft":
		cport, err := FreePort()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("storage \"raft\" {\n  path    = %q\n  node_id = \"bench\"\n}\ncluster_addr = \"https://127.0.0.1:%d\"", dataDir, cport), nil
	}
	return "", fmt.Errorf("vault storage %q: want file or raft", kind)
}

// Client returns an API client authenticated with the root token.
func (v *Vault) Client() (*vaultapi.Client, error) {
	cfg := vaultapi.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(v.RootToken)
	return c, nil
}

// Env is the environment for the vault CLI.
func (v *Vault) Env() []string {
	return []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.RootToken, "VAULT_FORMAT=", "VAULT_NAMESPACE="}
}

// CLI runs the vault CLI with VAULT_ADDR and VAULT_TOKEN set.
func (v *Vault) CLI(ctx context.Context, args ...string) (CmdResult, error) {
	return Run(ctx, v.Env(), "", v.Bin, args...)
}

func (v *Vault) start(ctx context.Context) error {
	var err error
	v.Proc, err = StartProcess("vault", v.LogPath, []string{"VAULT_ADDR=" + v.Addr}, v.Bin, "server", "-config="+v.ConfigPath)
	if err != nil {
		return err
	}
	c, err := v.Client()
	if err != nil {
		return err
	}
	_, err = Poll(ctx, 60*time.Second, 200*time.Millisecond, func() (bool, error) {
		if exited, werr := v.Proc.Exited(); exited {
			return false, Permanent(fmt.Errorf("vault exited: %v", werr))
		}
		_, err := c.Sys().SealStatusWithContext(ctx)
		return err == nil, err
	})
	if err != nil {
		v.Proc.Stop(5 * time.Second)
		return fmt.Errorf("vault not listening: %w\n%s", err, v.Proc.Tail(40))
	}
	return nil
}

// initAndUnseal initialises Vault with one key share (like
// `vault operator init -key-shares=1 -key-threshold=1`) and unseals it.
func (v *Vault) initAndUnseal(ctx context.Context) error {
	c, err := v.Client()
	if err != nil {
		return err
	}
	resp, err := c.Sys().InitWithContext(ctx, &vaultapi.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("vault operator init: %w", err)
	}
	v.UnsealKey = resp.Keys[0]
	v.RootToken = resp.RootToken
	if err := os.WriteFile(filepath.Join(v.Dir, "init.txt"), []byte("unseal_key="+v.UnsealKey+"\nroot_token="+v.RootToken+"\n"), 0o600); err != nil {
		return err
	}
	return v.unseal(ctx)
}

func (v *Vault) unseal(ctx context.Context) error {
	c, err := v.Client()
	if err != nil {
		return err
	}
	st, err := c.Sys().UnsealWithContext(ctx, v.UnsealKey)
	if err != nil {
		return fmt.Errorf("vault operator unseal: %w", err)
	}
	if st.Sealed {
		return fmt.Errorf("vault still sealed after unseal")
	}
	// Wait until it is active and serving requests.
	_, err = Poll(ctx, 60*time.Second, 200*time.Millisecond, func() (bool, error) {
		h, err := c.Sys().HealthWithContext(ctx)
		if err != nil {
			return false, err
		}
		if !h.Initialized || h.Sealed || h.Standby {
			return false, nil
		}
		_, err = c.Auth().Token().LookupSelfWithContext(ctx)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("vault not active after unseal: %w\n%s", err, v.Proc.Tail(40))
	}
	return nil
}

// Stop stops the Vault server (SIGTERM, then SIGKILL after 15 s).
func (v *Vault) Stop() {
	if v.Proc != nil {
		v.Proc.Stop(15 * time.Second)
	}
}

// Restart stops Vault and starts it again on the same address and storage,
// then unseals it. It returns how long Vault was down.
func (v *Vault) Restart(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	v.log.Logf("vault: stopping (pid %d)", v.Proc.Pid())
	v.Stop()
	v.log.Logf("vault: starting again with the same storage")
	if err := v.start(ctx); err != nil {
		return time.Since(start), err
	}
	if err := v.unseal(ctx); err != nil {
		return time.Since(start), err
	}
	d := time.Since(start)
	v.log.Logf("vault: restarted and unsealed in %s", d.Round(time.Millisecond))
	return d, nil
}
