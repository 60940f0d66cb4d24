package acceptance

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Names of the issuer tests.
const (
	issuerCluster = "issuer-a" // reaches the issuer API server, no stored credential
	issuerProbe   = "issuer-x" // a second entry a clusters/ writer points at the same API server
	issuerTargets = "targets-a"
)

// The discovery document and the key set answer without a Vault token over
// Vault's TLS listener (as the API server fetches them) and hold only the
// documented members: no key material beyond public keys, whose ids are
// exactly the keys issuer/config lists. A mount with no issuer configured
// answers an error that reveals nothing; the rest of the mount still wants
// a token.
func TestIssuerWellKnownEndpoints(t *testing.T) {
	t.Parallel()
	ensureIssuerConfig(t)
	client := st.Vault.HTTPSClient()

	done := step(t, "GET %s/.well-known/openid-configuration over TLS, no token", issuerURL())
	code, hdr, body := rawGet(t, client, issuerURL()+"/.well-known/openid-configuration")
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if cc := hdr.Get("Cache-Control"); !strings.Contains(cc, "max-age=") {
		t.Errorf("Cache-Control %q, want a max-age", cc)
	}
	var discovery map[string]any
	if err := json.Unmarshal(body, &discovery); err != nil {
		t.Fatalf("discovery: %v\n%s", err, body)
	}
	want := map[string]any{
		"issuer":                                issuerURL(),
		"jwks_uri":                              issuerURL() + "/.well-known/keys",
		"response_types_supported":              []any{"id_token"},
		"subject_types_supported":               []any{"public"},
		"id_token_signing_alg_values_supported": []any{"RS256"},
	}
	for k, v := range want {
		if got, _ := json.Marshal(discovery[k]); string(got) != string(must(json.Marshal(v))) {
			t.Errorf("discovery %s = %s, want %s", k, got, must(json.Marshal(v)))
		}
	}
	for k := range discovery {
		if _, ok := want[k]; !ok {
			t.Errorf("discovery holds an undocumented member %q", k)
		}
	}
	done()

	done = step(t, "GET .well-known/keys over TLS, no token: public keys only, the ids issuer/config lists")
	keys := publishedKeys(t)
	public := map[string]bool{"kty": true, "kid": true, "alg": true, "use": true, "n": true, "e": true}
	for _, k := range keys {
		for member := range k {
			if !public[member] {
				t.Errorf("key %s publishes %q", k.str("kid"), member)
			}
		}
		if k.str("kty") != "RSA" || k.str("alg") != "RS256" || k.str("n") == "" {
			t.Errorf("key %s: kty=%q alg=%q, want an RS256 public key", k.str("kid"), k.str("kty"), k.str("alg"))
		}
	}
	listed, raw := issuerKeys(t)
	var listedIDs []string
	for _, k := range listed {
		listedIDs = append(listedIDs, k.KID)
	}
	slices.Sort(listedIDs)
	if got := kids(keys); len(got) < 2 || !slices.Equal(got, listedIDs) {
		t.Errorf("published kids %v, issuer/config lists %v; want the same, next and current at least", got, listedIDs)
	}
	if keyIn(listed, "next") == "" || keyIn(listed, "current") == "" {
		t.Errorf("issuer/config keys %+v: want a next and a current key", listed)
	}
	for _, k := range keys {
		if strings.Contains(raw, k.str("n")) {
			t.Errorf("issuer/config read holds key %s's modulus", k.str("kid"))
		}
	}
	if strings.Contains(raw, "PRIVATE KEY") || strings.Contains(raw, `"d"`) {
		t.Errorf("issuer/config read holds key material: %s", raw)
	}
	done()

	done = step(t, "without a token over TLS: the rest of the mount is 403, other .well-known names are not served")
	for path, wantCode := range map[string]int{
		"/issuer/config":                 http.StatusForbidden,
		"/clusters/" + stack.ClusterName: http.StatusForbidden,
	} {
		if code, _, body := rawGet(t, client, issuerURL()+path); code != wantCode {
			t.Errorf("GET %s without a token: HTTP %d, want %d: %s", path, code, wantCode, body)
		}
	}
	if code, _, body := rawGet(t, client, issuerURL()+"/.well-known/other"); code == http.StatusOK {
		t.Errorf("GET .well-known/other without a token: HTTP 200: %s", body)
	}
	done()

	done = step(t, "a mount with no issuer configured: .well-known answers an error that reveals nothing")
	mount := "scanner-noissuer"
	mustVault(t, "secrets", "enable", "-path="+mount, stack.PluginName)
	t.Cleanup(func() { vaultCLI(t, "secrets", "disable", mount) })
	for _, name := range []string{"openid-configuration", "keys"} {
		u := st.Vault.TLSAddr + "/v1/" + mount + "/.well-known/" + name
		code, _, body := rawGet(t, client, u)
		if code < 400 || code >= 500 {
			t.Errorf("GET %s: HTTP %d, want a 4xx: %s", u, code, body)
		}
		for _, leak := range []string{"jwks_uri", `"kid"`, `"n"`, "issuer_ca_cert", st.Vault.TLSAddr} {
			if strings.Contains(string(body), leak) {
				t.Errorf("GET %s answers %s", u, body)
			}
		}
		t.Logf("GET .well-known/%s on %s/: HTTP %d %s", name, mount, code, strings.TrimSpace(string(body)))
	}
	done()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// An API server that trusts the mount as a JWT issuer (--authentication-
// config: the snippet clusters/<name>/authentication-config returns,
// verbatim) runs every role mode for a cluster entry that stores no
// Kubernetes credential; signing keys rotate under load without a failed
// issue; tokens the plugin did not sign, signed for another entry, expired
// or altered are 401s, and a token it signed is only the plugin's identity;
// a re-pointed entry gets a new audience that the API server rejects until
// its configuration trusts it, while leases issued before are still revoked.
func TestIssuerTrustedAPIServer(t *testing.T) {
	t.Parallel()
	ensureIssuerConfig(t)
	ctx := testCtx(t, 15*time.Minute)
	vc := vaultClient(t)

	kc, err := st.NewExtraCluster("issuer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Stop) // last: every lease is revoked by then
	rec := newTokenRecorderFor(t, kc.Kube)
	recCA := string(must(os.ReadFile(rec.CAFile)))
	t.Cleanup(func() {
		for _, p := range []string{"clusters/" + issuerCluster, "clusters/" + issuerProbe} {
			vaultCLI(t, "delete", stack.Mount+"/"+p)
		}
	})

	done := step(t, "vault write %s/clusters/%s use_issuer=true (no credential), through a recording proxy", stack.Mount, issuerCluster)
	mustWrite(t, vc, "clusters/"+issuerCluster, map[string]any{
		"use_issuer":         true,
		"kubernetes_host":    rec.URL,
		"kubernetes_ca_cert": recCA,
		"kubeconfig_host":    kc.URL(),
		"kubeconfig_ca_cert": string(kc.CAPEM()),
	})
	entry := readClusterEntry(t, issuerCluster)
	if set, _ := entry["service_account_jwt_set"].(bool); set || entry["service_account_jwt"] != nil {
		t.Errorf("an issuer-mode entry shows a stored credential: %v", entry)
	}
	if b := string(must(json.Marshal(entry))); strings.Contains(b, "eyJ") {
		t.Errorf("the entry's read holds a JWT: %s", b)
	}
	audience, _ := entry["issuer_audience"].(string)
	if !strings.HasPrefix(audience, "vault-plugin-scanner:") {
		t.Errorf("issuer_audience %q, want vault-plugin-scanner:<endpoint id>", audience)
	}
	done()

	done = step(t, "attackers on clusters/: a credential with use_issuer, a chosen audience")
	if _, err := vc.Logical().WriteWithContext(ctx, stack.Mount+"/clusters/issuer-with-jwt", map[string]any{
		"use_issuer": true, "kubernetes_host": kc.URL(), "kubernetes_ca_cert": string(kc.CAPEM()),
		"service_account_jwt": st.TokenRequesterJWT,
	}); asVaultError(t, "use_issuer with service_account_jwt", err).Status != http.StatusBadRequest {
		t.Errorf("use_issuer with service_account_jwt: want 400, got %v", err)
	}
	if sec, _ := vc.Logical().ReadWithContext(ctx, stack.Mount+"/clusters/issuer-with-jwt"); sec != nil {
		t.Errorf("a refused entry was stored: %v", sec.Data)
		vaultCLI(t, "delete", stack.Mount+"/clusters/issuer-with-jwt")
	}
	_, err = vc.Logical().WriteWithContext(ctx, stack.Mount+"/clusters/"+issuerCluster, map[string]any{"issuer_audience": "vault-plugin-scanner:chosen"})
	if got, _ := readClusterEntry(t, issuerCluster)["issuer_audience"].(string); got != audience {
		t.Errorf("writing issuer_audience (%v) changed it to %q", err, got)
	}
	done()

	done = step(t, "vault read %s/clusters/%s/authentication-config", stack.Mount, issuerCluster)
	trust := readIssuerTrust(t, issuerCluster)
	wantUser := issuerURL() + "#" + stack.Mount + ":" + issuerCluster
	if trust.Issuer != issuerURL() || trust.Audience != audience || trust.Subject != stack.Mount+":"+issuerCluster ||
		trust.Username != wantUser || trust.RBACKind != "User" || trust.RBACName != wantUser {
		t.Errorf("authentication-config: %+v; want issuer %s, audience %s, username %s", trust, issuerURL(), audience, wantUser)
	}
	assertSnippet(t, trust)
	authnFile := filepath.Join(kc.Dir, "authentication-config.yaml")
	writeAuthnConfig(t, authnFile, trust.Snippet)
	done()

	done = step(t, "start the issuer API server with --authentication-config (the snippet, verbatim)")
	if err := st.StartExtraCluster(ctx, kc, "--authentication-config="+authnFile); err != nil {
		t.Fatal(err)
	}
	done()

	done = step(t, "apply deploy/ manifests and pods in %s there", issuerTargets)
	if err := kc.ApplyManifests(ctx, append(st.ManifestPaths(), filepath.Join(st.RepoRoot, "deploy", ephemeralYAML))); err != nil {
		t.Fatal(err)
	}
	ensureNamespaceWithPods(t, kc, issuerTargets, map[string]map[string]string{"web-0": {"app": "web"}, "web-1": {"app": "web"}})
	roles := map[string]map[string]any{
		"iss-sa":      {"service_account_name": stack.ScannerSA, "service_account_namespace": stack.ScannerNamespace, "ttl": "15m"},
		"iss-bound":   {"kubernetes_role_name": podReader, "allowed_kubernetes_namespaces": teamA},
		"iss-gen":     {"generated_role_rules": podReaderRules, "allowed_kubernetes_namespaces": teamA},
		"iss-targets": {"target_profiles": "exec", "allowed_kubernetes_namespaces": issuerTargets, "max_targets": 2, "ttl": "10m"},
	}
	for name, fields := range roles {
		fields["cluster"] = issuerCluster
		writeEphemeralRole(t, name, fields)
	}
	done()

	done = step(t, "apply %s/clusters/%s/rbac: bound to the issuer User only, no self-rotation", stack.Mount, issuerCluster)
	applyIssuerRBAC(t, kc, wantUser)
	done()

	done = step(t, "check: ok, and the API server sees %s", wantUser)
	var checked map[string]any
	if _, err := stack.Poll(ctx, 90*time.Second, time.Second, func() (bool, error) {
		checked, err = checkData(t, issuerCluster)
		ok, _ := checked["ok"].(bool)
		return err == nil && ok, nil
	}); err != nil {
		t.Fatalf("check never ok: %v %v", checked, err)
	}
	if !holdsString(checked, wantUser) {
		t.Errorf("check does not report the identity %s: %v", wantUser, checked)
	}
	if _, err := vc.Logical().WriteWithContext(ctx, stack.Mount+"/clusters/"+issuerCluster+"/rotate-root", nil); asVaultError(t, "rotate-root", err).Status != http.StatusBadRequest {
		t.Errorf("rotate-root in issuer mode: want 400, got %v", err)
	}
	done()

	t.Run("modes", func(t *testing.T) { issuerRoleModes(t, kc) })

	done = step(t, "tokens the plugin did not sign, or signed for another entry, or altered: 401")
	issuerForgeries(t, kc, rec, trust)
	done()

	// Both mostly wait (for the plugin to re-sign, for a token to expire):
	// side by side.
	t.Run("rotation and expiry", func(t *testing.T) {
		t.Run("rotate twice under load", func(t *testing.T) {
			t.Parallel()
			done := step(t, "issuer/rotate twice under a load of issues: no failure; the new keys sign and are accepted")
			issuerRotationUnderLoad(t, kc, rec)
			done()
		})
		t.Run("expired token", func(t *testing.T) {
			t.Parallel()
			done := step(t, "a plugin-signed token past its exp (its key still published): 401")
			issuerExpiredToken(t, kc, rec)
			done()
		})
	})

	done = step(t, "re-point %s (host and CA): a new audience, rejected until the API server trusts it", issuerCluster)
	issuerRepoint(t, kc, authnFile, trust)
	done()
}

// mustWrite writes data to scanner/<path> and returns the warnings.
func mustWrite(t *testing.T, c *vaultapi.Client, path string, data map[string]any) []string {
	t.Helper()
	sec, err := c.Logical().WriteWithContext(testCtx(t, time.Minute), stack.Mount+"/"+path, data)
	if err != nil {
		t.Fatalf("write %s/%s: %v", stack.Mount, path, err)
	}
	if sec == nil {
		return nil
	}
	return sec.Warnings
}

// assertSnippet checks the AuthenticationConfiguration the plugin returns.
func assertSnippet(t *testing.T, tr issuerTrust) {
	t.Helper()
	p := tr.Parsed
	if p.APIVersion != "apiserver.config.k8s.io/v1" || p.Kind != "AuthenticationConfiguration" || len(p.JWT) != 1 {
		t.Fatalf("snippet: apiVersion %q kind %q with %d jwt entries; want apiserver.config.k8s.io/v1 AuthenticationConfiguration with one\n%s",
			p.APIVersion, p.Kind, len(p.JWT), tr.Snippet)
	}
	j := p.JWT[0]
	if j.Issuer.URL != tr.Issuer || !slices.Equal(j.Issuer.Audiences, []string{tr.Audience}) || j.Issuer.AudienceMatchPolicy != "MatchAny" {
		t.Errorf("snippet issuer %+v, want url %s and audiences [%s] MatchAny", j.Issuer, tr.Issuer, tr.Audience)
	}
	if strings.TrimSpace(j.Issuer.CertificateAuthority) != strings.TrimSpace(string(st.Vault.TLS.CAPEM)) {
		t.Errorf("snippet certificateAuthority is not issuer_ca_cert")
	}
	if m := j.ClaimMappings.Username; m.Claim != "sub" || m.Prefix == nil || *m.Prefix != tr.Issuer+"#" {
		t.Errorf("snippet claimMappings.username %+v, want claim sub, prefix %s#", m, tr.Issuer)
	}
}

// applyIssuerRBAC applies clusters/<issuer-a>/rbac in kc after checking that
// every binding names the issuer User alone and nothing grants the plugin
// rights over its own credential (it has none in issuer mode).
func applyIssuerRBAC(t *testing.T, kc *stack.KubeCluster, user string) {
	t.Helper()
	sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+issuerCluster+"/rbac")
	if err != nil || sec == nil {
		t.Fatalf("read clusters/%s/rbac: %v", issuerCluster, err)
	}
	manifests, _ := sec.Data["manifests"].(string)
	bindings := 0
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var obj struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta   `json:"metadata"`
			Subjects        []rbacv1.Subject    `json:"subjects"`
			Rules           []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("a generated document does not parse: %v", err)
		}
		if obj.Metadata.Namespace == stack.RequesterNamespace {
			t.Errorf("%s %s/%s: issuer mode needs nothing in the token requester's namespace", obj.Kind, obj.Metadata.Namespace, obj.Metadata.Name)
		}
		for _, r := range obj.Rules {
			if slices.Contains(r.Resources, "serviceaccounts/token") && slices.Contains(r.ResourceNames, stack.RequesterSA) {
				t.Errorf("%s %s grants a token for the plugin's own account: %+v", obj.Kind, obj.Metadata.Name, r)
			}
		}
		if strings.HasSuffix(obj.Kind, "Binding") {
			bindings++
			want := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
			if !slices.Equal(obj.Subjects, want) {
				t.Errorf("%s %s binds %+v, want the issuer User %s alone", obj.Kind, obj.Metadata.Name, obj.Subjects, user)
			}
		}
	}
	if bindings == 0 {
		t.Fatalf("clusters/%s/rbac binds nothing:\n%s", issuerCluster, manifests)
	}
	applyYAML(t, kc, "issuer-rbac.yaml", manifests)
}

// issuerRoleModes issues, uses with kubectl and revokes one credential in
// each role mode, all at once (they mostly wait for the token cache).
func issuerRoleModes(t *testing.T, kc *stack.KubeCluster) {
	cases := []struct {
		role  string
		query url.Values
		ns    string
		// yes and no are `kubectl auth can-i` questions for the credential.
		yes, no [][]string
	}{
		{"iss-sa", nil, stack.ScannerNamespace,
			[][]string{{"list", "pods"}}, [][]string{{"list", "secrets"}}},
		{"iss-bound", url.Values{"kubernetes_namespace": {teamA}}, teamA,
			[][]string{{"list", "pods"}}, [][]string{{"list", "pods", "-n", teamB}, {"delete", "pods"}}},
		{"iss-gen", url.Values{"kubernetes_namespace": {teamA}}, teamA,
			[][]string{{"list", "pods"}}, [][]string{{"list", "pods", "-n", teamB}, {"create", "pods"}}},
		{"iss-targets", url.Values{"kubernetes_namespace": {issuerTargets}, "targets": {"web-0"}}, issuerTargets,
			[][]string{{"create", "pods/web-0", "--subresource=exec"}}, [][]string{{"create", "pods/web-1", "--subresource=exec"}, {"list", "pods"}}},
	}
	for _, tc := range cases {
		t.Run(tc.role, func(t *testing.T) {
			t.Parallel()
			c := readCreds(t, tc.role, tc.query)
			kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
			if err := stack.WriteFile0600(kubeconfig, []byte(c.Kubeconfig)); err != nil {
				t.Fatal(err)
			}
			for _, q := range tc.yes {
				if got := strings.TrimSpace(kubectl(t, kubeconfig, append([]string{"auth", "can-i"}, q...)...).Stdout); got != "yes" {
					t.Errorf("can-i %v: %q, want yes", q, got)
				}
			}
			for _, q := range tc.no {
				if got := strings.TrimSpace(kubectl(t, kubeconfig, append([]string{"auth", "can-i"}, q...)...).Stdout); got != "no" {
					t.Errorf("can-i %v: %q, want no", q, got)
				}
			}
			if tc.role != "iss-targets" {
				if res := kubectl(t, kubeconfig, "get", "pods"); res.ExitCode != 0 {
					t.Errorf("kubectl get pods -n %s: %s", tc.ns, res)
				}
			}
			revoked := time.Now()
			if err := vaultClient(t).Sys().RevokeWithContext(testCtx(t, time.Minute), c.LeaseID); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			waitStatusIn(t, kc, tc.ns, c.Token, http.StatusUnauthorized, 45*time.Second)
			t.Logf("%s: issued, used with kubectl, revoked; token rejected %s after revoke", tc.role, secs(time.Since(revoked)))
		})
	}
}

// waitStatusIn polls kc with token (list pods in ns) until want.
func waitStatusIn(t *testing.T, kc *stack.KubeCluster, ns, token string, want int, timeout time.Duration) {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	last := 0
	if _, err := stack.Poll(ctx, timeout, 500*time.Millisecond, func() (bool, error) {
		code, err := kc.TokenStatus(ctx, ns, token)
		last = code
		return code == want, err
	}); err != nil {
		t.Fatalf("token never got HTTP %d within %s (last %d): %v", want, timeout, last, err)
	}
}

// issuerForgeries: tokens the test signs itself, plugin-signed tokens
// altered, and one the plugin signed for another entry pointed at the same
// API server are all refused; a token the plugin signed for issuer-a is the
// plugin's identity and nothing more.
func issuerForgeries(t *testing.T, kc *stack.KubeCluster, rec *tokenRecorder, trust issuerTrust) {
	t.Helper()
	keys, _ := issuerKeys(t)
	now := time.Now()
	claims := map[string]any{
		"iss": trust.Issuer, "aud": []string{trust.Audience}, "sub": trust.Subject,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": "forged",
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var modulus string
	for _, k := range publishedKeys(t) {
		if k.str("kid") == keyIn(keys, "current") {
			modulus = k.str("n")
		}
	}
	forged := map[string]string{
		"signed by another key under the current kid": signRS256(t, other, map[string]any{"alg": "RS256", "typ": "JWT", "kid": keyIn(keys, "current")}, claims),
		"HS256 with the published modulus as secret":  signHS256(t, []byte(modulus), map[string]any{"alg": "HS256", "typ": "JWT", "kid": keyIn(keys, "current")}, claims),
		"alg none": b64JSON(t, map[string]any{"alg": "none", "typ": "JWT"}) + "." + b64JSON(t, claims) + ".",
	}

	// A clusters/ writer's own entry at the same API server: the plugin
	// signs for it, with its own audience and subject.
	mustWrite(t, vaultClient(t), "clusters/"+issuerProbe, map[string]any{
		"use_issuer": true, "kubernetes_host": rec.URL, "kubernetes_ca_cert": string(must(os.ReadFile(rec.CAFile))),
	})
	probeAudience, _ := readClusterEntry(t, issuerProbe)["issuer_audience"].(string)
	if probeAudience == "" || probeAudience == trust.Audience {
		t.Errorf("%s's audience %q, want its own (not %s)", issuerProbe, probeAudience, trust.Audience)
	}
	if data, err := checkData(t, issuerProbe); err == nil {
		if ok, _ := data["ok"].(bool); ok {
			t.Errorf("check of %s ok: the API server accepted another entry's audience", issuerProbe)
		}
	}
	probeToken := recordedFor(t, rec, probeAudience, 0)
	if probeToken == "" {
		t.Fatalf("the recorder holds no token signed for %s", issuerProbe)
	}
	if _, c := jwtSegments(t, probeToken); c["sub"] != stack.Mount+":"+issuerProbe {
		t.Errorf("%s's token has sub %v", issuerProbe, c["sub"])
	}
	ownToken := liveIssuerToken(t, rec, trust.Audience)
	forged["signed by the plugin for "+issuerProbe] = probeToken
	_, ownClaims := jwtSegments(t, ownToken)
	for what, change := range map[string]func(map[string]any){
		"sub":       func(c map[string]any) { c["sub"] = stack.Mount + ":" + issuerProbe },
		"aud added": func(c map[string]any) { c["aud"] = []string{trust.Audience, "kubernetes"} },
		"exp later": func(c map[string]any) { c["exp"] = time.Now().Add(time.Hour).Unix() },
	} {
		altered := map[string]any{}
		for k, v := range ownClaims {
			altered[k] = v
		}
		change(altered)
		forged["a plugin-signed token with "+what+" altered"] = withClaims(t, ownToken, altered)
	}
	for what, tok := range forged {
		if code := reviewStatus(t, kc.Kube, tok); code != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d, want 401", what, code)
		}
	}

	who, err := identityOf(testCtx(t, 30*time.Second), kc.Kube, ownToken)
	if err != nil {
		t.Fatalf("a live plugin-signed token for %s: %v", issuerCluster, err)
	}
	if who.Username != trust.Username || !slices.Equal(who.Groups, []string{"system:authenticated"}) || who.UID != "" {
		t.Errorf("the plugin's own token is %+v, want %s in system:authenticated only", who, trust.Username)
	}
	for k := range who.Extra {
		if k != "authentication.kubernetes.io/credential-id" {
			t.Errorf("the plugin's own token carries extra %q", k)
		}
	}
	t.Logf("a token the plugin signed for %s is %s %v; %d forgeries and replays refused", issuerCluster, who.Username, who.Groups, len(forged))
}

// recordedFor is the newest token the recorder saw for audience with more
// than left to live, or "".
func recordedFor(t *testing.T, rec *tokenRecorder, audience string, left time.Duration) string {
	t.Helper()
	found := ""
	for _, tok := range rec.issuerTokens(t, issuerURL()) {
		_, c := jwtSegments(t, tok)
		aud, _ := json.Marshal(c["aud"])
		exp, _ := c["exp"].(float64)
		if strings.Contains(string(aud), `"`+audience+`"`) && (left == 0 || time.Until(time.Unix(int64(exp), 0)) > left) {
			found = tok
		}
	}
	return found
}

// liveIssuerToken makes the plugin call the API server (check) until the
// recorder holds a token for issuer-a's audience with 10 s or more to live.
func liveIssuerToken(t *testing.T, rec *tokenRecorder, audience string) string {
	t.Helper()
	var tok string
	if _, err := stack.Poll(testCtx(t, 2*time.Minute), 90*time.Second, 2*time.Second, func() (bool, error) {
		if _, err := checkData(t, issuerCluster); err != nil {
			return false, err
		}
		tok = recordedFor(t, rec, audience, 10*time.Second)
		return tok != "", nil
	}); err != nil {
		t.Fatalf("no live token of %s recorded: %v", issuerCluster, err)
	}
	return tok
}

// issuerRotationUnderLoad rotates the signing key twice while workers issue,
// use and revoke credentials, until the API server has been sent a token
// signed by the newest current key (the plugin re-signs before its cached
// token expires); no unit of the load may fail.
func issuerRotationUnderLoad(t *testing.T, kc *stack.KubeCluster, rec *tokenRecorder) {
	t.Helper()
	before, _ := issuerKeys(t)
	publishedBefore := kids(publishedKeys(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop) }) }
	var issued, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := vaultClient(t)
			for i := 0; i < 1200; i++ {
				select {
				case <-stop:
					return
				case <-time.After(250 * time.Millisecond):
				}
				if err := issueAndRevoke(ctx, c, kc, "iss-sa", stack.ScannerNamespace); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					issued.Add(1)
				}
			}
		}()
	}
	defer func() { stopLoad(); wg.Wait() }()

	// A next key may sign once it has been published for the key set's
	// max-age (60 s): until then issuer/rotate refuses, since the API
	// server may hold an older copy of the key set that long.
	rotate := func() []issuerKey {
		time.Sleep(2 * time.Second)
		keys, _ := issuerKeys(t)
		for _, k := range keys {
			if k.State == "next" {
				time.Sleep(time.Until(k.CreatedAt.Add(61 * time.Second)))
			}
		}
		mustWrite(t, vaultClient(t), "issuer/rotate", nil)
		after, _ := issuerKeys(t)
		return after
	}
	first := rotate()
	if keyIn(first, "current") != keyIn(before, "next") || !slices.Contains(publishedBefore, keyIn(first, "current")) {
		t.Errorf("rotation: current %s, want the earlier next %s, published before it signed (%v)", keyIn(first, "current"), keyIn(before, "next"), publishedBefore)
	}
	second := rotate()
	if keyIn(second, "current") != keyIn(first, "next") || keyIn(second, "next") == "" {
		t.Errorf("second rotation: keys %+v after %+v", second, first)
	}
	// Every key that signed a token that may still be alive is published.
	published := kids(publishedKeys(t))
	for _, kid := range []string{keyIn(before, "current"), keyIn(first, "current"), keyIn(second, "current"), keyIn(second, "next")} {
		if !slices.Contains(published, kid) {
			t.Errorf("key %s not published right after the rotations: %v", kid, published)
		}
	}
	newest := keyIn(second, "current")
	waited, err := stack.Poll(ctx, 100*time.Second, time.Second, func() (bool, error) {
		for _, tok := range rec.issuerTokens(t, issuerURL()) {
			if h, _ := jwtSegments(t, tok); h["kid"] == newest {
				return true, nil
			}
		}
		return failed.Load() > 0, nil
	})
	if err != nil {
		t.Errorf("the plugin never signed with the newest key %s: %v", newest, err)
	}
	time.Sleep(2 * time.Second) // a few issues with the new key
	stopLoad()
	wg.Wait()
	t.Logf("rotation under load: %d issues, %d failed; the newest key signed %s after the second rotation", issued.Load(), failed.Load(), secs(waited))
	if failed.Load() > 0 {
		t.Errorf("%d of %d issues failed during rotation; first: %v", failed.Load(), issued.Load()+failed.Load(), firstErr.Load())
	}
	if issued.Load() < 10 {
		t.Errorf("only %d issues during rotation", issued.Load())
	}
}

// issuerExpiredToken replays a token the plugin signed for issuer-a once
// its exp has passed (plus the API server's 10 s cache of successes), its
// key still published: 401.
func issuerExpiredToken(t *testing.T, kc *stack.KubeCluster, rec *tokenRecorder) {
	t.Helper()
	ctx := testCtx(t, 3*time.Minute)
	var expired string
	if _, err := stack.Poll(ctx, 2*time.Minute, 2*time.Second, func() (bool, error) {
		published := kids(publishedKeys(t))
		for _, tok := range rec.issuerTokens(t, issuerURL()) {
			h, c := jwtSegments(t, tok)
			exp, _ := c["exp"].(float64)
			if time.Until(time.Unix(int64(exp), 0)) < -11*time.Second && slices.Contains(published, h["kid"].(string)) {
				expired = tok
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no expired plugin-signed token whose key is still published: %v", err)
	}
	if code := reviewStatus(t, kc.Kube, expired); code != http.StatusUnauthorized {
		t.Errorf("expired plugin-signed token: HTTP %d, want 401", code)
	}
}

// issuerRepoint re-points issuer-a straight at the API server (new host and
// CA): a new audience, the same subject; the API server rejects it until
// its configuration is the new snippet; a lease issued before is revoked
// through the retired endpoint meanwhile.
func issuerRepoint(t *testing.T, kc *stack.KubeCluster, authnFile string, old issuerTrust) {
	t.Helper()
	vc := vaultClient(t)
	before := readCreds(t, "iss-sa", nil)
	waitStatusIn(t, kc, stack.ScannerNamespace, before.Token, http.StatusOK, 10*time.Second)

	warnings := mustWrite(t, vc, "clusters/"+issuerCluster, map[string]any{
		"kubernetes_host":    kc.URL(),
		"kubernetes_ca_cert": string(kc.CAPEM()),
	})
	if w := strings.Join(warnings, "\n"); !strings.Contains(w, "audience") {
		t.Errorf("re-point warnings %q: want one about the new audience", warnings)
	}
	trust := readIssuerTrust(t, issuerCluster)
	if trust.Audience == old.Audience || trust.Subject != old.Subject || trust.Username != old.Username {
		t.Errorf("after re-point: audience %s (was %s), subject %s (was %s)", trust.Audience, old.Audience, trust.Subject, old.Subject)
	}
	if data, err := checkData(t, issuerCluster); err == nil {
		if ok, _ := data["ok"].(bool); ok {
			t.Errorf("check ok while the API server does not trust audience %s", trust.Audience)
		}
	} else {
		t.Logf("check before the API server trusts the new audience: %s", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	if _, err := vc.Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/creds/iss-sa"); err == nil {
		t.Errorf("creds issued while the API server does not trust the new audience")
	}

	revoked := time.Now()
	if err := vc.Sys().RevokeWithContext(testCtx(t, time.Minute), before.LeaseID); err != nil {
		t.Fatalf("revoke a lease issued before the re-point: %v", err)
	}
	waitStatusIn(t, kc, stack.ScannerNamespace, before.Token, http.StatusUnauthorized, 45*time.Second)
	t.Logf("lease issued before the re-point revoked through the retired endpoint; token rejected %s later", secs(time.Since(revoked)))

	written := time.Now()
	writeAuthnConfig(t, authnFile, trust.Snippet)
	var data map[string]any
	if _, err := stack.Poll(testCtx(t, 3*time.Minute), 150*time.Second, time.Second, func() (bool, error) {
		var err error
		data, err = checkData(t, issuerCluster)
		ok, _ := data["ok"].(bool)
		return err == nil && ok, nil
	}); err != nil {
		t.Fatalf("check never ok after the new snippet: %v", err)
	}
	t.Logf("the API server trusted the new audience %s after the file was replaced", secs(time.Since(written)))
	if !holdsString(data, old.Username) {
		t.Errorf("check after re-point does not report %s: %v", old.Username, data)
	}
	after := readCreds(t, "iss-sa", nil)
	waitStatusIn(t, kc, stack.ScannerNamespace, after.Token, http.StatusOK, 10*time.Second)
}
