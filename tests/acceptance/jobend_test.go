package acceptance

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// A CI job ends its credential by revoking its own Vault token (README,
// "Using it"): three child tokens of root, each with only a policy that may
// read creds/jobend (plus Vault's default policy, which allows revoke-self),
// read a credential as a job would. The first revokes itself over HTTP
// (`curl -X POST $VAULT_ADDR/v1/auth/token/revoke-self`, the GitHub
// example), the second with `vault token revoke -self` (the GitLab and
// Jenkins examples); each one's Kubernetes token gets 401 within 15 s and
// its bound Secret, lease and Vault token are gone, while the others keep
// working (200). The third, a sibling, is then revoked by root (`vault token
// revoke <token>`, auth/token/revoke) and dies the same way.
func TestJobEndRevokesItsCredential(t *testing.T) {
	t.Parallel()
	const role = "jobend" // own role: TestRevoke revokes the cluster-a prefix in parallel
	writeRole(t, role)
	const policy = "jobend-scan"
	c := vaultClient(t)
	if err := c.Sys().PutPolicyWithContext(testCtx(t, time.Minute), policy,
		`path "`+stack.Mount+`/creds/`+role+`" { capabilities = ["read"] }`); err != nil {
		t.Fatalf("write policy %s: %v", policy, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Sys().DeletePolicyWithContext(ctx, policy); err != nil {
			t.Logf("cleanup: delete policy %s: %v", policy, err)
		}
	})

	type job struct {
		name, token string
		sec         stack.CLISecret
		secret      string // the bound Secret's name, from the JWT
	}
	done := step(t, "three child tokens of root (policy %s) each vault read %s/creds/%s", policy, stack.Mount, role)
	var jobs []*job
	for _, name := range []string{"curl revoke-self", "vault token revoke -self", "sibling"} {
		j := &job{name: name, token: childToken(t, policy)}
		res := vaultAs(t, j.token, "read", "-format=json", stack.Mount+"/creds/"+role)
		if res.ExitCode != 0 {
			t.Fatalf("%s: vault read creds with the child token: %s", name, res)
		}
		sec, err := stack.ParseCLISecret(res.Stdout)
		if err != nil {
			t.Fatalf("%v\n%s", err, res.Stdout)
		}
		j.sec = sec
		revokeAtEnd(t, sec.LeaseID)
		kio, _ := jwtClaims(t, sec.Data["service_account_token"])["kubernetes.io"].(map[string]any)
		bound, _ := kio["secret"].(map[string]any)
		j.secret, _ = bound["name"].(string)
		if j.secret == "" {
			t.Fatalf("%s: token is not bound to a Secret: %v", name, kio)
		}
		if code := tokenStatus(t, sec.Data["service_account_token"]); code != http.StatusOK {
			t.Fatalf("%s: fresh token: HTTP %d, want 200", name, code)
		}
		jobs = append(jobs, j)
	}
	wantSecrets(t, role, jobs[0].secret, jobs[1].secret, jobs[2].secret)
	// A child token may not read another role: the policy is what a job has.
	if res := vaultAs(t, jobs[0].token, "read", stack.Mount+"/creds/"+stack.RoleName); res.ExitCode == 0 ||
		!strings.Contains(res.Stderr, "permission denied") {
		t.Fatalf("child token read creds/%s: want permission denied: %s", stack.RoleName, res)
	}
	done()

	ended := func(j *job, start time.Time) {
		t.Helper()
		took := waitTokenStatus(t, j.sec.Data["service_account_token"], http.StatusUnauthorized, 15*time.Second, start)
		t.Logf("%s: Kubernetes token rejected %s after the revoke", j.name, secs(took))
		if _, err := c.Sys().LookupWithContext(testCtx(t, time.Minute), j.sec.LeaseID); err == nil {
			t.Errorf("%s: lease %s still exists after its token was revoked", j.name, j.sec.LeaseID)
		}
		if _, err := c.Auth().Token().LookupWithContext(testCtx(t, time.Minute), j.token); err == nil {
			t.Errorf("%s: the Vault token still exists", j.name)
		}
	}

	done = step(t, "job 1 ends: POST /v1/auth/token/revoke-self with its own token")
	start := time.Now()
	req, err := http.NewRequestWithContext(testCtx(t, time.Minute), http.MethodPost, st.Vault.Addr+"/v1/auth/token/revoke-self", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", jobs[0].token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("revoke-self: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke-self: HTTP %d, want 204", resp.StatusCode)
	}
	t.Logf("revoke-self returned HTTP %d after %s", resp.StatusCode, secs(time.Since(start)))
	ended(jobs[0], start)
	wantSecrets(t, role, jobs[1].secret, jobs[2].secret)
	for _, j := range jobs[1:] {
		if code := tokenStatus(t, j.sec.Data["service_account_token"]); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d after job 1 ended, want 200", j.name, code)
		}
	}
	done()

	done = step(t, "job 2 ends: vault token revoke -self with its own token")
	start = time.Now()
	if res := vaultAs(t, jobs[1].token, "token", "revoke", "-self"); res.ExitCode != 0 {
		t.Fatalf("vault token revoke -self: %s", res)
	}
	t.Logf("vault token revoke -self returned after %s", secs(time.Since(start)))
	ended(jobs[1], start)
	wantSecrets(t, role, jobs[2].secret)
	done()

	done = step(t, "the sibling's credential still works, then root revokes the sibling token")
	if code := tokenStatus(t, jobs[2].sec.Data["service_account_token"]); code != http.StatusOK {
		t.Fatalf("sibling token: HTTP %d after the other jobs ended, want 200", code)
	}
	if _, err := c.Sys().LookupWithContext(testCtx(t, time.Minute), jobs[2].sec.LeaseID); err != nil {
		t.Fatalf("sibling lease: %v", err)
	}
	start = time.Now()
	mustVault(t, "token", "revoke", jobs[2].token)
	ended(jobs[2], start)
	wantSecrets(t, role)
	done()
}

// childToken creates a child token of root with policy (and the default
// policy) and revokes it when the test ends.
func childToken(t *testing.T, policy string) string {
	t.Helper()
	c := vaultClient(t)
	sec, err := c.Auth().Token().CreateWithContext(testCtx(t, time.Minute), &vaultapi.TokenCreateRequest{
		Policies: []string{policy}, TTL: "15m",
	})
	if err != nil || sec.Auth == nil {
		t.Fatalf("create child token: %v", err)
	}
	tok := sec.Auth.ClientToken
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Already revoked by the test: fine (Vault answers 204 either way).
		if err := c.Auth().Token().RevokeTreeWithContext(ctx, tok); err != nil {
			t.Logf("cleanup: revoke child token: %v", err)
		}
	})
	return tok
}

// vaultAs runs the vault CLI with token as VAULT_TOKEN.
func vaultAs(t *testing.T, token string, args ...string) stack.CmdResult {
	t.Helper()
	env := []string{"VAULT_ADDR=" + st.Vault.Addr, "VAULT_TOKEN=" + token, "VAULT_FORMAT=", "VAULT_NAMESPACE="}
	res, err := stack.Run(testCtx(t, 2*time.Minute), env, "", st.Vault.Bin, args...)
	if err != nil {
		t.Fatalf("vault %v: %v", args, err)
	}
	return res
}

// wantSecrets checks that role's bound Secrets are exactly names (polled for
// up to 5 s: revocation is asynchronous).
func wantSecrets(t *testing.T, role string, names ...string) {
	t.Helper()
	slices.Sort(names)
	ctx := testCtx(t, time.Minute)
	var have []string
	_, err := stack.Poll(ctx, 5*time.Second, 250*time.Millisecond, func() (bool, error) {
		secrets, err := st.ManagedSecrets(ctx, role)
		have = have[:0]
		for _, s := range secrets {
			have = append(have, s.Name)
		}
		slices.Sort(have)
		return err == nil && slices.Equal(have, names), err
	})
	if err != nil {
		t.Fatalf("role %s: bound Secrets %v, want %v: %v", role, have, names, err)
	}
}

// A job whose integration hides its Vault token (GitLab's `secrets:`,
// Jenkins' withVault) cannot revoke it, but the credential still ends no
// later than that token: when a Vault token expires, Vault revokes every
// lease it created. A child token with a 20 s TTL reads a credential of the
// role's 15 m TTL; after the token's expiry the Kubernetes token gets 401
// and the bound Secret is gone.
func TestJobEndTokenExpiryEndsItsCredential(t *testing.T) {
	t.Parallel()
	const role = "jobend-expiry"
	writeRole(t, role)
	c := vaultClient(t)
	sec, err := c.Auth().Token().CreateWithContext(testCtx(t, time.Minute), &vaultapi.TokenCreateRequest{TTL: "20s"})
	if err != nil || sec.Auth == nil {
		t.Fatalf("create child token: %v", err)
	}
	tok, created := sec.Auth.ClientToken, time.Now()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = c.Auth().Token().RevokeTreeWithContext(ctx, tok)
	})

	done := step(t, "a child token with a 20 s TTL reads %s/creds/%s (role ttl 15m)", stack.Mount, role)
	res := vaultAs(t, tok, "read", "-format=json", stack.Mount+"/creds/"+role)
	if res.ExitCode != 0 {
		t.Fatalf("vault read creds with the child token: %s", res)
	}
	cs, err := stack.ParseCLISecret(res.Stdout)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.Stdout)
	}
	revokeAtEnd(t, cs.LeaseID)
	t.Logf("lease_duration %d s", cs.LeaseDuration)
	token := cs.Data["service_account_token"]
	if code := tokenStatus(t, token); code != http.StatusOK {
		t.Fatalf("fresh token: HTTP %d, want 200", code)
	}
	done()

	done = step(t, "the Vault token expires: its lease is revoked with it")
	expiry := created.Add(20 * time.Second)
	took := waitTokenStatus(t, token, http.StatusUnauthorized, 45*time.Second, expiry)
	t.Logf("Kubernetes token rejected %s after the Vault token's expiry", secs(took))
	waitSecretCount(t, role, 0, 5*time.Second)
	if _, err := c.Sys().LookupWithContext(testCtx(t, time.Minute), cs.LeaseID); err == nil {
		t.Errorf("lease %s still exists after its token expired", cs.LeaseID)
	}
	done()
}
