package acceptance

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// A scanner written against Vault's client libraries: Debian's
// python3-hvac 0.11.2 and npm's node-vault 0.12.0, each running the
// script in testdata/clients/ with its own Vault token, as a job would.
// Per client, on its own role:
//
//   - the job reads creds/<role> (a GET, like every consumer): a 15-minute
//     non-renewable lease; the script lists pods with the token over TLS
//     verified by the issued CA (200) and writes the kubeconfig with mode
//     0600, which kubectl uses;
//   - a peer job whose policy may only read creds can neither revoke the
//     first job's lease (sys/leases/revoke) nor a prefix
//     (sys/leases/revoke-prefix): permission denied, the token still works;
//   - the job revokes its lease through sys/leases/revoke (hvac's
//     sys.revoke_lease, node-vault's revoke): its token gets 401 within 15 s;
//   - the job reads again and revokes its own Vault token
//     (auth/token/revoke-self): that credential gets 401 within 15 s, the
//     peer's keeps working;
//   - the operator revokes the role's prefix through
//     sys/leases/revoke-prefix (hvac's sys.revoke_prefix; node-vault's
//     revokePrefix calls the legacy sys/revoke-prefix, so a plain write):
//     the peer's credential gets 401 within 15 s.
//
// No output of the scripts carries a token.
func TestVaultClientLibraries(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, toolEnv, script string
	}{
		{"python3-hvac", "HVAC_PYTHON", "hvac_client.py"},
		{"node-vault", "NODE_VAULT_NODE", "node_vault_client.js"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			script, err := filepath.Abs(filepath.Join("testdata", "clients", c.script))
			if err != nil {
				t.Fatal(err)
			}
			lib := libraryClient{bin: clientTool(t, c.toolEnv), script: script}
			testLibraryClient(t, lib, "clients-"+strings.Split(c.name, "-")[0])
		})
	}
}

func testLibraryClient(t *testing.T, lib libraryClient, role string) {
	writeRole(t, role)
	credsPath := stack.Mount + "/creds/" + role
	readOnly := `path "` + credsPath + `" { capabilities = ["read"] }`
	jobToken := childToken(t, policyAtEnd(t, role+"-job", readOnly+"\n"+`path "sys/leases/revoke" { capabilities = ["update"] }`))
	peerToken := childToken(t, policyAtEnd(t, role+"-peer", readOnly))

	done := step(t, "the job reads %s: lease, pods listed with the token, kubeconfig 0600 for kubectl", credsPath)
	job := lib.read(t, jobToken, credsPath)
	if r := kubectl(t, job.Kubeconfig, "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl with the kubeconfig the client wrote: %s", r)
	}
	done()

	done = step(t, "a peer job, whose policy only reads creds, cannot revoke the job's lease or the prefix")
	peer := lib.read(t, peerToken, credsPath)
	for _, args := range [][]string{{"revoke", job.LeaseID}, {"revoke-prefix", credsPath}} {
		res := lib.run(t, peerToken, args...)
		if res.ExitCode == 0 || !strings.Contains(res.Stderr, "permission denied") {
			t.Fatalf("peer %s: want permission denied: %s", args[0], res)
		}
	}
	if code := tokenStatus(t, job.token); code != http.StatusOK {
		t.Fatalf("the job's credential after the peer's attempts: HTTP %d, want 200", code)
	}
	done()

	done = step(t, "the job revokes its lease: PUT sys/leases/revoke")
	lib.revoke(t, jobToken, job, "revoke", job.LeaseID)
	done()

	done = step(t, "the job reads again, then revokes its own Vault token: auth/token/revoke-self")
	again := lib.read(t, jobToken, credsPath)
	lib.revoke(t, jobToken, again, "revoke-self")
	if code := tokenStatus(t, peer.token); code != http.StatusOK {
		t.Fatalf("the peer's credential after the job ended: HTTP %d, want 200", code)
	}
	done()

	done = step(t, "the operator revokes the role's prefix: PUT sys/leases/revoke-prefix/%s", credsPath)
	lib.revoke(t, st.Vault.RootToken, peer, "revoke-prefix", credsPath)
	waitSecretCount(t, role, 0, 10*time.Second)
	done()
}

// libraryClient runs one client library's script from testdata/clients/.
type libraryClient struct{ bin, script string }

// libraryCreds is what the script prints after a read (never a token);
// token is read from the kubeconfig it wrote.
type libraryCreds struct {
	LeaseID       string `json:"lease_id"`
	LeaseDuration int    `json:"lease_duration"`
	Renewable     bool   `json:"renewable"`
	CredentialID  string `json:"credential_id"`
	Kubeconfig    string `json:"kubeconfig"`
	APIStatus     int    `json:"api_status"`
	token         string
}

func (l libraryClient) run(t *testing.T, vaultToken string, args ...string) stack.CmdResult {
	t.Helper()
	env := []string{"VAULT_ADDR=" + st.Vault.Addr, "VAULT_TOKEN=" + vaultToken}
	res, err := stack.Run(testCtx(t, 2*time.Minute), env, "", l.bin, append([]string{l.script}, args...)...)
	if err != nil {
		t.Fatalf("%s %v: %v", filepath.Base(l.script), args, err)
	}
	return res
}

// read runs `read`, checks the lease and the file, and revokes the lease
// when the test ends.
func (l libraryClient) read(t *testing.T, vaultToken, credsPath string) libraryCreds {
	t.Helper()
	dir := t.TempDir()
	res := l.run(t, vaultToken, "read", credsPath, dir)
	if res.ExitCode != 0 {
		t.Fatalf("read %s: %s", credsPath, res)
	}
	var c libraryCreds
	if err := json.Unmarshal([]byte(res.Stdout), &c); err != nil {
		t.Fatalf("read: output is not the JSON summary: %v\n%s", err, res.Stdout)
	}
	revokeAtEnd(t, c.LeaseID)
	if !strings.HasPrefix(c.LeaseID, credsPath+"/") || c.LeaseDuration != 900 || c.Renewable {
		t.Errorf("lease %q, %d s, renewable %v: want under %s/, 900 s (role ttl 15m), not renewable", c.LeaseID, c.LeaseDuration, c.Renewable, credsPath)
	}
	if c.APIStatus != http.StatusOK {
		t.Errorf("listing pods with the token: HTTP %d, want 200", c.APIStatus)
	}
	if !strings.HasPrefix(c.CredentialID, "JTI=") {
		t.Errorf("credential_id %q, want JTI=...", c.CredentialID)
	}
	assertMode(t, c.Kubeconfig, 0o600)
	b, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c.token = kubeconfigUserToken(t, b)
	if strings.Contains(res.Stdout+res.Stderr, c.token) {
		t.Errorf("the client's output contains the token")
	}
	return c
}

// revoke runs a revoking command and waits for c's token to get 401 and
// its lease to be gone.
func (l libraryClient) revoke(t *testing.T, vaultToken string, c libraryCreds, args ...string) {
	t.Helper()
	start := time.Now()
	if res := l.run(t, vaultToken, args...); res.ExitCode != 0 {
		t.Fatalf("%s: %s", args[0], res)
	}
	took := waitTokenStatus(t, c.token, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("%s: the credential got 401 %s after the call", args[0], secs(took))
	if _, err := vaultClient(t).Sys().LookupWithContext(testCtx(t, time.Minute), c.LeaseID); err == nil {
		t.Errorf("%s: lease %s still exists", args[0], c.LeaseID)
	}
}

// clientTool is the path scripts/build-tools.sh printed as name (make
// acceptance exports it). Without it the test skips, since only hosts with
// the client's package manager fetch it; under CI it fails instead.
func clientTool(t *testing.T, name string) string {
	t.Helper()
	p := os.Getenv(name)
	if p == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: scripts/build-tools.sh prints it (see its stderr for why it did not)", name)
		}
		t.Skipf("%s is not set: run with the environment of scripts/build-tools.sh (make acceptance does)", name)
	}
	return p
}

// kubeconfigUserToken is the bearer token of a kubeconfig's only user.
func kubeconfigUserToken(t *testing.T, kubeconfig []byte) string {
	t.Helper()
	var kc struct {
		Users []struct {
			User struct {
				Token string `json:"token"`
			} `json:"user"`
		} `json:"users"`
	}
	if err := yaml.Unmarshal(kubeconfig, &kc); err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	if len(kc.Users) != 1 || kc.Users[0].User.Token == "" {
		t.Fatalf("kubeconfig: want one user with a token, have %d users", len(kc.Users))
	}
	return kc.Users[0].User.Token
}
