package acceptance

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// What a GitLab CI job with `id_tokens` and `secrets: vault:` meets: Vault's
// jwt auth method trusts the GitLab instance's signing key and binds the
// role to a project, a branch and an audience; the runner logs in with the
// job's ID token and reads each variable.
const (
	gitlabAuthPath  = "jwt-gitlab" // the job's VAULT_AUTH_PATH
	gitlabJWTRole   = "ci-scanner" // the job's VAULT_AUTH_ROLE
	gitlabRole      = "gitlab-ci"  // scanner/roles/<name>
	gitlabPolicy    = "gitlab-ci-scan"
	gitlabIssuer    = "https://gitlab.example.com"
	gitlabAudience  = "https://vault.example.com" // id_tokens: VAULT_ID_TOKEN: aud:
	gitlabProject   = "group/scanner"
	gitlabTokenTTL  = 30 * time.Second // the jwt role's token_ttl: the runner's Vault token
	gitlabLoginPath = "auth/" + gitlabAuthPath + "/login"
)

// GitLab Runner's own Vault code (helpers/vault/service, driven by
// tools/gitlab-vault-secrets as the runner's vault resolver drives it)
// resolves
//
//	secrets:
//	  KUBECONFIG: {vault: {engine: {name: generic, path: scanner}, path: creds/gitlab-ci, field: kubeconfig}, file: true}
//	  K8S_TOKEN:  {vault: {engine: ..., path: creds/gitlab-ci, field: service_account_token}, file: false}
//
// with an ID token signed by a key the test made. Each variable is one
// jwt login and one GET without parameters (Vault's audit log), so two
// variables are two leases with different tokens; nothing is revoked.
// The file KUBECONFIG holds a kubeconfig kubectl uses against the stack
// (pods listed in scanner-namespace, kube-system forbidden). After the job,
// both credentials keep working until the runner's Vault token (the jwt
// role's token_ttl, 30 s) expires; then both get 401 and their Secrets and
// leases are gone. Jobs of another project, branch or audience, with an
// expired token or one signed by another key, get nothing.
func TestGitLabRunnerSecretsVault(t *testing.T) {
	t.Parallel()
	bin := clientTool(t, "GITLAB_VAULT_SECRETS_BIN")
	ensureReliabAudit(t) // a file audit device, to count the runner's requests
	writeRole(t, gitlabRole)
	key := setupGitLabJWTAuth(t)
	dir := t.TempDir()
	secretsFile := writeGitLabJobSecrets(t, dir, map[string]gitlabVariable{
		"KUBECONFIG": {field: "kubeconfig", file: true},
		"K8S_TOKEN":  {field: "service_account_token", file: false},
	})

	done := step(t, "the runner resolves KUBECONFIG (file) and K8S_TOKEN with the job's ID token")
	auditBefore := len(readJSONLines[gitlabAuditEntry](t, reliabAuditPath()))
	idToken := signGitLabIDToken(t, key, gitlabIDTokenClaims(gitlabProject, "main", gitlabAudience, time.Now()))
	buildTmp := filepath.Join(dir, "build.tmp")
	res := runGitLabSecrets(t, bin, idToken, secretsFile, buildTmp)
	jobEnd := time.Now()
	if res.ExitCode != 0 {
		t.Fatalf("gitlab-vault-secrets: %s", res)
	}
	if strings.Contains(res.Stdout+res.Stderr, idToken) {
		t.Errorf("the runner's output contains the ID token")
	}
	kubeconfigPath := filepath.Join(buildTmp, "KUBECONFIG")
	if !strings.Contains(res.Stdout, "KUBECONFIG="+kubeconfigPath+"\n") {
		t.Fatalf("stdout does not export KUBECONFIG=%s:\n%s", kubeconfigPath, res.Stdout)
	}
	kubeconfigBytes, err := os.ReadFile(kubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	tokenBytes, err := os.ReadFile(filepath.Join(buildTmp, "K8S_TOKEN"))
	if err != nil {
		t.Fatal(err)
	}
	kubeconfigToken, varToken := kubeconfigUserToken(t, kubeconfigBytes), string(tokenBytes)
	if kubeconfigToken == varToken {
		t.Fatalf("both variables carry the same token: want one lease per variable")
	}
	done()

	done = step(t, "kubectl with the KUBECONFIG file: pods in %s listed, kube-system forbidden", stack.ScannerNamespace)
	if r := kubectl(t, kubeconfigPath, "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl get pods with the runner's KUBECONFIG: %s", r)
	}
	if r := kubectl(t, kubeconfigPath, "get", "pods", "-n", "kube-system"); r.ExitCode == 0 || !strings.Contains(r.Stderr, "Forbidden") {
		t.Fatalf("kubectl get pods -n kube-system: want Forbidden: %s", r)
	}
	done()

	done = step(t, "Vault's audit log: per variable one jwt login and one GET, no parameters, nothing else")
	entries := readJSONLines[gitlabAuditEntry](t, reliabAuditPath())[auditBefore:]
	logins, reads := 0, map[string]int{} // reads per token accessor (HMAC'd)
	for _, e := range entries {
		if e.Type != "request" {
			continue
		}
		switch e.Request.Path {
		case gitlabLoginPath:
			logins++
		case stack.Mount + "/creds/" + gitlabRole:
			if e.Request.Operation != "read" || len(e.Request.Data) != 0 {
				t.Errorf("creds request: operation %q with %d parameters, want a read without any", e.Request.Operation, len(e.Request.Data))
			}
			reads[e.Auth.Accessor]++
		}
	}
	if logins != 2 || len(reads) != 2 {
		t.Fatalf("%d logins and creds reads by %d tokens (%v), want 2 and 2 (one login per variable)", logins, len(reads), reads)
	}
	for _, e := range entries {
		if _, ours := reads[e.Auth.Accessor]; ours && e.Type == "request" && e.Request.Path != stack.Mount+"/creds/"+gitlabRole {
			t.Errorf("the runner's token also requested %s %s", e.Request.Operation, e.Request.Path)
		}
	}
	for accessor, n := range reads {
		if n != 1 {
			t.Errorf("token %s read creds %d times, want once", accessor, n)
		}
	}
	done()

	done = step(t, "the job has ended: nothing was revoked, both credentials still work")
	for name, tok := range map[string]string{"KUBECONFIG": kubeconfigToken, "K8S_TOKEN": varToken} {
		if code := tokenStatus(t, tok); code != http.StatusOK {
			t.Fatalf("%s after the job: HTTP %d, want 200 (the runner revokes nothing)", name, code)
		}
	}
	if n := gitlabLeaseCount(t); n != 2 {
		t.Fatalf("%d leases under %s/creds/%s after the job, want 2", n, stack.Mount, gitlabRole)
	}
	done()

	done = step(t, "the runner's Vault token expires (token_ttl %s): Vault revokes both leases", gitlabTokenTTL)
	took := waitAllRejected(t, []string{kubeconfigToken, varToken}, gitlabTokenTTL+30*time.Second, jobEnd)
	t.Logf("rejected %s and %s after the job ended (token_ttl %s, role ttl 15m)", secs(took[0]), secs(took[1]), gitlabTokenTTL)
	waitSecretCount(t, gitlabRole, 0, 10*time.Second)
	if n := gitlabLeaseCount(t); n != 0 {
		t.Fatalf("%d leases left after the runner's Vault token expired", n)
	}
	done()

	done = step(t, "ID tokens of another project, branch or audience, expired, or from another key: no credential")
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		key    *rsa.PrivateKey
		claims map[string]any
	}{
		{"another project", key, gitlabIDTokenClaims("group/other", "main", gitlabAudience, time.Now())},
		{"another branch", key, gitlabIDTokenClaims(gitlabProject, "feature", gitlabAudience, time.Now())},
		{"another audience", key, gitlabIDTokenClaims(gitlabProject, "main", "https://other.example.com", time.Now())},
		{"expired", key, gitlabIDTokenClaims(gitlabProject, "main", gitlabAudience, time.Now().Add(-time.Hour))},
		{"another signing key", otherKey, gitlabIDTokenClaims(gitlabProject, "main", gitlabAudience, time.Now())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := signGitLabIDToken(t, tc.key, tc.claims)
			res := runGitLabSecrets(t, bin, bad, secretsFile, filepath.Join(t.TempDir(), "build.tmp"))
			if res.ExitCode == 0 {
				t.Fatalf("resolved secrets with a bad ID token: %s", res.Stdout)
			}
			if !strings.Contains(res.Stderr, "authenticating Vault client") || !strings.Contains(res.Stderr, "status code 400") {
				t.Errorf("want the jwt login refused (400), got: %s", res.Stderr)
			}
			if strings.Contains(res.Stdout+res.Stderr, bad) {
				t.Errorf("the runner's output contains the ID token")
			}
			if n := secretCount(t, gitlabRole); n != 0 {
				t.Errorf("%d bound Secrets after a refused job, want 0", n)
			}
		})
	}
	done()
}

// gitlabAuditEntry is what the test reads of a Vault file-audit line.
type gitlabAuditEntry struct {
	Type string `json:"type"`
	Auth struct {
		Accessor string `json:"accessor"`
	} `json:"auth"`
	Request struct {
		Path      string         `json:"path"`
		Operation string         `json:"operation"`
		Data      map[string]any `json:"data"`
	} `json:"request"`
}

// setupGitLabJWTAuth configures Vault as a GitLab instance's docs say:
// the jwt auth method with the instance's public key, and a role bound to
// the project, branch and audience whose tokens get a policy that may read
// creds/gitlab-ci. It returns the instance's signing key.
func setupGitLabJWTAuth(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	authMethodAtEnd(t, gitlabAuthPath, "jwt")
	writeAll(t, []vaultWrite{
		{"auth/" + gitlabAuthPath + "/config", map[string]any{
			"jwt_validation_pubkeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))},
			"bound_issuer":           gitlabIssuer,
		}},
		{"auth/" + gitlabAuthPath + "/role/" + gitlabJWTRole, map[string]any{
			"role_type":       "jwt",
			"user_claim":      "sub",
			"bound_audiences": []string{gitlabAudience},
			"bound_claims":    map[string]any{"project_path": gitlabProject, "ref": "main", "ref_type": "branch"},
			"token_policies":  []string{gitlabPolicy},
			"token_ttl":       gitlabTokenTTL.String(),
			"token_max_ttl":   gitlabTokenTTL.String(),
		}},
	})
	policyAtEnd(t, gitlabPolicy, `path "`+stack.Mount+`/creds/`+gitlabRole+`" { capabilities = ["read"] }`)
	return key
}

// gitlabIDTokenClaims are the claims of a GitLab CI job's ID token issued
// at iat (valid for 5 minutes).
func gitlabIDTokenClaims(project, ref, aud string, iat time.Time) map[string]any {
	return map[string]any{
		"iss":            gitlabIssuer,
		"sub":            "project_path:" + project + ":ref_type:branch:ref:" + ref,
		"aud":            aud,
		"iat":            iat.Unix(),
		"nbf":            iat.Add(-5 * time.Second).Unix(),
		"exp":            iat.Add(5 * time.Minute).Unix(),
		"project_path":   project,
		"namespace_path": strings.Split(project, "/")[0],
		"ref":            ref,
		"ref_type":       "branch",
		"pipeline_id":    "1001",
		"job_id":         "2002",
		"user_login":     "ci-user",
	}
}

// signGitLabIDToken signs claims as an RS256 JWT.
func signGitLabIDToken(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "gitlab-test"}) + "." + enc(claims)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

type gitlabVariable struct {
	field string
	file  bool
}

// writeGitLabJobSecrets writes the `secrets` object of the job payload
// GitLab sends the runner for these variables, each reading creds/gitlab-ci
// through the generic engine at scanner/, and returns its path.
func writeGitLabJobSecrets(t *testing.T, dir string, vars map[string]gitlabVariable) string {
	t.Helper()
	payload := map[string]any{}
	for name, v := range vars {
		payload[name] = map[string]any{
			"vault": map[string]any{
				"server": map[string]any{
					"url": "${VAULT_SERVER_URL}",
					"auth": map[string]any{
						"name": "jwt",
						"path": gitlabAuthPath,
						"data": map[string]any{"jwt": "${VAULT_ID_TOKEN}", "role": gitlabJWTRole},
					},
				},
				"engine": map[string]any{"name": "generic", "path": stack.Mount},
				"path":   "creds/" + gitlabRole,
				"field":  v.field,
			},
			"file": v.file,
		}
	}
	b, err := json.MarshalIndent(payload, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "job-secrets.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runGitLabSecrets runs the runner's Vault code with the job's variables
// VAULT_SERVER_URL and VAULT_ID_TOKEN, and no Vault token of its own.
func runGitLabSecrets(t *testing.T, bin, idToken, secretsFile, buildTmp string) stack.CmdResult {
	t.Helper()
	env := []string{"VAULT_SERVER_URL=" + st.Vault.Addr, "VAULT_ID_TOKEN=" + idToken}
	res, err := stack.Run(testCtx(t, 2*time.Minute), env, "", bin, "-secrets", secretsFile, "-dir", buildTmp)
	if err != nil {
		t.Fatalf("gitlab-vault-secrets: %v", err)
	}
	return res
}

// gitlabLeaseCount counts the leases under scanner/creds/gitlab-ci/.
func gitlabLeaseCount(t *testing.T) int {
	t.Helper()
	sec, err := vaultClient(t).Logical().ListWithContext(testCtx(t, time.Minute), "sys/leases/lookup/"+stack.Mount+"/creds/"+gitlabRole+"/")
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	if sec == nil {
		return 0
	}
	keys, _ := sec.Data["keys"].([]any)
	return len(keys)
}
