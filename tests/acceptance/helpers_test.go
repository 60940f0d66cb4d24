package acceptance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// suiteStart is when TestMain began; step logs show the offset from it.
var suiteStart = time.Now()

// step logs the start of a step and returns a function that logs its end
// with the time it took.
func step(t *testing.T, format string, args ...any) func() {
	t.Helper()
	name := fmt.Sprintf(format, args...)
	t.Logf("[%6.1fs] ▶ %s", time.Since(suiteStart).Seconds(), name)
	start := time.Now()
	return func() {
		t.Helper()
		t.Logf("[%6.1fs] ✔ %s (%s)", time.Since(suiteStart).Seconds(), name, time.Since(start).Round(time.Millisecond))
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func vaultClient(t *testing.T) *vaultapi.Client {
	t.Helper()
	c, err := st.Vault.Client()
	if err != nil {
		t.Fatalf("vault client: %v", err)
	}
	return c
}

// creds is a parsed creds/<role> response.
type creds struct {
	LeaseID       string
	LeaseDuration int
	Renewable     bool
	Warnings      []string
	Data          map[string]any

	Token, Kubeconfig, KubeconfigJSON, CredentialID, ExpiresAt string
	// Issued is when the request was sent.
	Issued time.Time
}

func (c *creds) str(key string) string {
	s, _ := c.Data[key].(string)
	return s
}

func credsFromSecret(t *testing.T, sec *vaultapi.Secret, issued time.Time) *creds {
	t.Helper()
	if sec == nil {
		t.Fatalf("creds: empty response")
	}
	c := &creds{
		LeaseID: sec.LeaseID, LeaseDuration: sec.LeaseDuration, Renewable: sec.Renewable,
		Warnings: sec.Warnings, Data: sec.Data, Issued: issued,
	}
	c.Token = c.str("service_account_token")
	c.Kubeconfig = c.str("kubeconfig")
	c.KubeconfigJSON = c.str("kubeconfig_json")
	c.CredentialID = c.str("credential_id")
	c.ExpiresAt = c.str("expires_at")
	if c.Token == "" || c.LeaseID == "" {
		t.Fatalf("creds: no token or no lease id in response: lease_id=%q data keys=%v", c.LeaseID, keys(sec.Data))
	}
	return c
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// readCreds GETs scanner/creds/<role> (query parameters optional) and
// revokes the lease when the test ends.
func readCreds(t *testing.T, role string, query url.Values) *creds {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	issued := time.Now()
	sec, err := vaultClient(t).Logical().ReadWithDataWithContext(ctx, stack.Mount+"/creds/"+role, query)
	if err != nil {
		t.Fatalf("read %s/creds/%s %v: %v", stack.Mount, role, query, err)
	}
	c := credsFromSecret(t, sec, issued)
	revokeAtEnd(t, c.LeaseID)
	return c
}

// vaultReadCreds runs `vault read -format=json <args>` (the CLI, as an
// operator would) and revokes the lease when the test ends.
func vaultReadCreds(t *testing.T, args ...string) stack.CLISecret {
	t.Helper()
	res := mustVault(t, append([]string{"read", "-format=json"}, args...)...)
	sec, err := stack.ParseCLISecret(res.Stdout)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.Stdout)
	}
	revokeAtEnd(t, sec.LeaseID)
	return sec
}

// revokeAtEnd revokes a lease in t.Cleanup (a lease already gone is fine).
func revokeAtEnd(t *testing.T, leaseID string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := vaultClient(t).Sys().RevokeWithContext(ctx, leaseID); err != nil {
			t.Logf("cleanup: revoke %s: %v", leaseID, err)
		}
	})
}

// waitTokenStatus polls the API server with token until it answers want
// (200 or 401); it returns the time from `from` until then.
func waitTokenStatus(t *testing.T, token string, want int, timeout time.Duration, from time.Time) time.Duration {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	last := 0
	_, err := stack.Poll(ctx, timeout, 500*time.Millisecond, func() (bool, error) {
		code, err := st.TokenStatus(ctx, token)
		last = code
		return code == want, err
	})
	if err != nil {
		t.Fatalf("token never got HTTP %d within %s (last status %d): %v", want, timeout, last, err)
	}
	return time.Since(from)
}

// waitAllRejected polls every token concurrently until each gets 401, all
// within timeout after from; it returns, per token, the time from `from`
// to its first 401.
func waitAllRejected(t *testing.T, tokens []string, timeout time.Duration, from time.Time) []time.Duration {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	took := make([]time.Duration, len(tokens))
	errs := make([]error, len(tokens))
	var wg sync.WaitGroup
	for i, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = stack.Poll(ctx, time.Until(from.Add(timeout)), 250*time.Millisecond, func() (bool, error) {
				code, err := st.TokenStatus(ctx, tok)
				if code == http.StatusUnauthorized {
					took[i] = time.Since(from)
				}
				return code == http.StatusUnauthorized, err
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("token %d not rejected within %s: %v", i, timeout, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return took
}

func tokenStatus(t *testing.T, token string) int {
	t.Helper()
	code, err := st.TokenStatus(testCtx(t, 30*time.Second), token)
	if err != nil {
		t.Fatalf("GET pods with token: %v", err)
	}
	return code
}

// secretCount counts bound Secrets of a role.
func secretCount(t *testing.T, role string) int {
	t.Helper()
	secs, err := st.ManagedSecrets(testCtx(t, 30*time.Second), role)
	if err != nil {
		t.Fatalf("list bound Secrets: %v", err)
	}
	return len(secs)
}

// waitSecretCount polls until role has n bound Secrets.
func waitSecretCount(t *testing.T, role string, n int, timeout time.Duration) {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	got := -1
	_, err := stack.Poll(ctx, timeout, 500*time.Millisecond, func() (bool, error) {
		secs, err := st.ManagedSecrets(ctx, role)
		got = len(secs)
		return err == nil && got == n, err
	})
	if err != nil {
		t.Fatalf("role %s: want %d bound Secrets, have %d: %v", role, n, got, err)
	}
}

// kubectl runs kubectl with a kubeconfig file.
func kubectl(t *testing.T, kubeconfig string, args ...string) stack.CmdResult {
	t.Helper()
	res, err := st.Kubectl(testCtx(t, time.Minute), kubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v", args, err)
	}
	return res
}

// vaultCLI runs the vault CLI as root.
func vaultCLI(t *testing.T, args ...string) stack.CmdResult {
	t.Helper()
	res, err := st.Vault.CLI(testCtx(t, 2*time.Minute), args...)
	if err != nil {
		t.Fatalf("vault %v: %v", args, err)
	}
	return res
}

func mustVault(t *testing.T, args ...string) stack.CmdResult {
	t.Helper()
	res := vaultCLI(t, args...)
	if res.ExitCode != 0 {
		t.Fatalf("vault %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// assertMode checks a file's permission bits.
func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("%s: mode %04o, want %04o", path, got, want)
	}
}

// jwtClaims decodes a JWT's payload (no verification).
func jwtClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return m
}

// writeRole writes a role on cluster-a for scanner-sa and deletes it when
// the test ends.
func writeRole(t *testing.T, name string, extra ...string) {
	t.Helper()
	writeRoleOnCluster(t, name, stack.ClusterName, extra...)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// policyAtEnd writes a Vault policy, deletes it when the test ends, and
// returns its name.
func policyAtEnd(t *testing.T, name, rules string) string {
	t.Helper()
	c := vaultClient(t)
	if err := c.Sys().PutPolicyWithContext(testCtx(t, time.Minute), name, rules); err != nil {
		t.Fatalf("write policy %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Sys().DeletePolicyWithContext(ctx, name); err != nil {
			t.Logf("cleanup: delete policy %s: %v", name, err)
		}
	})
	return name
}

// authMethodAtEnd enables a Vault auth method of kind at path and disables
// it when the test ends, which revokes every login made through it and the
// leases those logins created.
func authMethodAtEnd(t *testing.T, path, kind string) {
	t.Helper()
	c := vaultClient(t)
	if err := c.Sys().EnableAuthWithOptionsWithContext(testCtx(t, time.Minute), path, &vaultapi.EnableAuthOptions{Type: kind}); err != nil {
		t.Fatalf("vault auth enable -path=%s %s: %v", path, kind, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Sys().DisableAuthWithContext(ctx, path); err != nil {
			t.Logf("cleanup: vault auth disable %s: %v", path, err)
		}
	})
}

// vaultWrite is one write of a Vault set-up, done in order by writeAll.
type vaultWrite struct {
	path string
	data map[string]any
}

func writeAll(t *testing.T, writes []vaultWrite) {
	t.Helper()
	c := vaultClient(t)
	for _, w := range writes {
		if _, err := c.Logical().WriteWithContext(testCtx(t, time.Minute), w.path, w.data); err != nil {
			t.Fatalf("vault write %s: %v", w.path, err)
		}
	}
}
