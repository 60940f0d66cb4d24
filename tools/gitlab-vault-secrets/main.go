// Command gitlab-vault-secrets resolves a GitLab CI job's `secrets:` of type
// `vault:` with GitLab Runner's own Vault code
// (gitlab.com/gitlab-org/gitlab-runner/helpers/vault/service), the way the
// runner's vault resolver does, so the acceptance tests can show what a CI
// job gets from the plugin.
//
// Usage:
//
//	gitlab-vault-secrets -secrets job-secrets.json -dir BUILD_TMP
//
// job-secrets.json is the `secrets` object of the job payload GitLab sends
// the runner: variable name -> {"vault": {"server": {"url", "namespace",
// "auth": {"name", "path", "data": {"jwt", "role"}}}, "engine": {"name",
// "path"}, "path", "field"}, "file": bool}. `$VAR` references in it are
// expanded from the environment, as the runner expands them from the job's
// variables (`jwt: $VAULT_ID_TOKEN`).
//
// Per variable, in name order, it does what the runner does: a new Vault
// client that logs in with the auth method (service.NewVault), one read of
// the secret's field (GetField), formatted with %v. A file variable (the
// default) is then written as the runner's shell writes it (`printf '%s'
// value > "$TMP/NAME"`, so the process umask decides its mode) and printed
// as NAME=<path>, the value the job's variable gets. The value of a
// variable with "file": false is written to <dir>/NAME as well (the job
// would get it in its environment) and only its path is printed: values
// never go to stdout or stderr.
//
// The runner's job-payload types (common/spec) are not used: their module's
// dependencies (gitlab.com/gitlab-org/moa, step-runner) are not served by
// the Go module proxy. The types below decode the same JSON.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault/auth_methods"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault/service"
)

type jobSecret struct {
	Vault *vaultSecret `json:"vault"`
	File  *bool        `json:"file"`
}

// isFile: GitLab's default for `file:` is true.
func (s jobSecret) isFile() bool { return s.File == nil || *s.File }

type vaultSecret struct {
	Server struct {
		URL       string `json:"url"`
		Namespace string `json:"namespace"`
		Auth      struct {
			Name string         `json:"name"`
			Path string         `json:"path"`
			Data map[string]any `json:"data"`
		} `json:"auth"`
	} `json:"server"`
	Engine struct {
		Name string `json:"name"`
		Path string `json:"path"`
	} `json:"engine"`
	Path  string `json:"path"`
	Field string `json:"field"`
}

// The interfaces service.NewVault and GetField take (service.Auth,
// service.Engine, service.Secret), as the runner's job-payload type
// implements them.
func (s *vaultSecret) AuthName() string { return s.Server.Auth.Name }
func (s *vaultSecret) AuthPath() string { return s.Server.Auth.Path }
func (s *vaultSecret) AuthData() auth_methods.Data {
	return auth_methods.Data(s.Server.Auth.Data)
}
func (s *vaultSecret) EngineName() string  { return s.Engine.Name }
func (s *vaultSecret) EnginePath() string  { return s.Engine.Path }
func (s *vaultSecret) SecretPath() string  { return s.Path }
func (s *vaultSecret) SecretField() string { return s.Field }

// expand replaces $VAR and ${VAR} in every string of the secret from the
// environment, as the runner does from the job's variables.
func (s *vaultSecret) expand() {
	for _, p := range []*string{&s.Server.URL, &s.Server.Namespace, &s.Server.Auth.Name, &s.Server.Auth.Path,
		&s.Engine.Name, &s.Engine.Path, &s.Path, &s.Field} {
		*p = os.ExpandEnv(*p)
	}
	for k, v := range s.Server.Auth.Data {
		if str, ok := v.(string); ok {
			s.Server.Auth.Data[k] = os.ExpandEnv(str)
		}
	}
}

// resolve is the runner's vault resolver: log in, read, format with %v.
func resolve(s *vaultSecret) (string, error) {
	v, err := service.NewVault(s.Server.URL, s.Server.Namespace, s)
	if err != nil {
		return "", err
	}
	data, err := v.GetField(s, s)
	if err != nil {
		return "", err
	}
	if data == nil {
		return "", fmt.Errorf("field %q not found", s.Field)
	}
	return fmt.Sprintf("%v", data), nil
}

func run(secretsPath, dir string) error {
	b, err := os.ReadFile(secretsPath)
	if err != nil {
		return err
	}
	var secrets map[string]jobSecret
	if err := json.Unmarshal(b, &secrets); err != nil {
		return fmt.Errorf("%s: %w", secretsPath, err)
	}
	names := make([]string, 0, len(secrets))
	for name := range secrets {
		names = append(names, name)
	}
	slices.Sort(names)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, name := range names {
		s := secrets[name]
		if s.Vault == nil {
			return fmt.Errorf("secret %q: not a vault secret", name)
		}
		s.Vault.expand()
		value, err := resolve(s.Vault)
		if err != nil {
			return fmt.Errorf("resolving secret %q: %w", name, err)
		}
		path := filepath.Join(dir, name)
		// 0o666 less the umask: what `printf > file` in the job's shell gives.
		if err := os.WriteFile(path, []byte(value), 0o666); err != nil {
			return err
		}
		if s.isFile() {
			fmt.Printf("%s=%s\n", name, path)
		} else {
			fmt.Printf("%s (file: false; value in %s)\n", name, path)
		}
	}
	return nil
}

func main() {
	secretsPath := flag.String("secrets", "", "the job payload's `secrets` object (JSON file)")
	dir := flag.String("dir", "", "where file variables are written (the runner's build temp dir)")
	flag.Parse()
	if *secretsPath == "" || *dir == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*secretsPath, *dir); err != nil {
		fmt.Fprintf(os.Stderr, "gitlab-vault-secrets: %v\n", err)
		os.Exit(1)
	}
}
