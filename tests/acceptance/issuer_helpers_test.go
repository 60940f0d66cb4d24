package acceptance

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// issuerTokenTTL is the lifetime of the JWTs the plugin signs for its own
// calls in these tests: the minimum, so an expired one is seen soon.
const issuerTokenTTL = time.Minute

// issuerURL is the mount as a token issuer: Vault's TLS listener, which the
// API server reaches.
func issuerURL() string { return st.Vault.TLSAddr + "/v1/" + stack.Mount }

var (
	issuerConfigOnce sync.Once
	issuerConfigErr  error
)

// ensureIssuerConfig writes scanner/issuer/config once: the issuer on
// Vault's TLS listener, its CA, RS256, token_ttl 1m.
func ensureIssuerConfig(t *testing.T) {
	t.Helper()
	issuerConfigOnce.Do(func() {
		done := step(t, "vault write %s/issuer/config issuer=%s token_ttl=%s", stack.Mount, issuerURL(), issuerTokenTTL)
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, issuerConfigErr = vaultClient(t).Logical().WriteWithContext(ctx, stack.Mount+"/issuer/config", map[string]any{
			"issuer":            issuerURL(),
			"issuer_ca_cert":    string(st.Vault.TLS.CAPEM),
			"signing_algorithm": "RS256",
			"token_ttl":         issuerTokenTTL.String(),
		})
	})
	if issuerConfigErr != nil {
		t.Fatalf("write %s/issuer/config: %v", stack.Mount, issuerConfigErr)
	}
}

// issuerKey is one entry of issuer/config's keys.
type issuerKey struct {
	KID       string    `json:"kid"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
}

// issuerKeys reads issuer/config and returns its keys and the raw read
// (to search for anything that must not be there).
func issuerKeys(t *testing.T) ([]issuerKey, string) {
	t.Helper()
	sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/issuer/config")
	if err != nil || sec == nil {
		t.Fatalf("read %s/issuer/config: %v", stack.Mount, err)
	}
	raw, _ := json.Marshal(sec.Data)
	var out struct {
		Keys []issuerKey `json:"keys"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("issuer/config keys: %v\n%s", err, raw)
	}
	return out.Keys, string(raw)
}

// keyIn returns the kid of the key in state, or "".
func keyIn(keys []issuerKey, state string) string {
	for _, k := range keys {
		if k.State == state {
			return k.KID
		}
	}
	return ""
}

// rawGet GETs url with client and no Vault token; it returns status,
// headers and body.
func rawGet(t *testing.T, client *http.Client, url string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t, 30*time.Second), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, body
}

// jwk is one published key, every member kept so a test can name any it
// must not see.
type jwk map[string]any

func (k jwk) str(name string) string { s, _ := k[name].(string); return s }

// publishedKeys GETs <issuer>/.well-known/keys over TLS without a token.
func publishedKeys(t *testing.T) []jwk {
	t.Helper()
	code, _, body := rawGet(t, st.Vault.HTTPSClient(), issuerURL()+"/.well-known/keys")
	if code != http.StatusOK {
		t.Fatalf("GET .well-known/keys: HTTP %d: %s", code, body)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf(".well-known/keys: %v\n%s", err, body)
	}
	return set.Keys
}

func kids(keys []jwk) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.str("kid"))
	}
	slices.Sort(out)
	return out
}

// authnConfig is the part of an AuthenticationConfiguration these tests
// read (k8s.io/apiserver's types are not a dependency of the tests).
type authnConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	JWT        []struct {
		Issuer struct {
			URL                  string   `json:"url"`
			Audiences            []string `json:"audiences"`
			AudienceMatchPolicy  string   `json:"audienceMatchPolicy"`
			CertificateAuthority string   `json:"certificateAuthority"`
		} `json:"issuer"`
		ClaimMappings struct {
			Username struct {
				Claim  string  `json:"claim"`
				Prefix *string `json:"prefix"`
			} `json:"username"`
		} `json:"claimMappings"`
	} `json:"jwt"`
}

// issuerTrust is clusters/<name>/authentication-config.
type issuerTrust struct {
	Snippet  string // authentication_config, verbatim
	Parsed   authnConfig
	Issuer   string
	Audience string
	Subject  string
	Username string
	RBACKind string
	RBACName string
}

func readIssuerTrust(t *testing.T, cluster string) issuerTrust {
	t.Helper()
	sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+cluster+"/authentication-config")
	if err != nil || sec == nil {
		t.Fatalf("read %s/clusters/%s/authentication-config: %v", stack.Mount, cluster, err)
	}
	str := func(k string) string { s, _ := sec.Data[k].(string); return s }
	tr := issuerTrust{Snippet: str("authentication_config"), Issuer: str("issuer"), Audience: str("audience"),
		Subject: str("subject"), Username: str("username")}
	if m, ok := sec.Data["rbac_subject"].(map[string]any); ok {
		tr.RBACKind, _ = m["kind"].(string)
		tr.RBACName, _ = m["name"].(string)
	}
	if err := yaml.UnmarshalStrict([]byte(tr.Snippet), &tr.Parsed); err != nil {
		// Strict on what the tests model would fail on fields they do not
		// model: parse leniently and check the modelled ones.
		if err := yaml.Unmarshal([]byte(tr.Snippet), &tr.Parsed); err != nil {
			t.Fatalf("authentication_config does not parse: %v\n%s", err, tr.Snippet)
		}
	}
	return tr
}

// writeAuthnConfig writes the snippet to path the way an operator's tool
// would replace it: a new file renamed over the old one.
func writeAuthnConfig(t *testing.T, path, snippet string) {
	t.Helper()
	tmp := path + ".new"
	if err := stack.WriteFile0600(tmp, []byte(snippet)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// identityOf asks the API server who token is (SelfSubjectReview). A
// rejected token is an error carrying the status.
func identityOf(ctx context.Context, kube *stack.KubeAPIServer, token string) (authenticationv1.UserInfo, error) {
	cs, err := kubernetes.NewForConfig(kube.RESTConfig(token))
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	return r.Status.UserInfo, nil
}

// reviewStatus is the HTTP status of a SelfSubjectReview with token: 201
// when the API server accepts who it is, 401 when not.
func reviewStatus(t *testing.T, kube *stack.KubeAPIServer, token string) int {
	t.Helper()
	_, err := identityOf(testCtx(t, 30*time.Second), kube, token)
	var status apierrors.APIStatus
	switch {
	case err == nil:
		return http.StatusCreated
	case errors.As(err, &status):
		return int(status.Status().Code)
	}
	t.Fatalf("SelfSubjectReview: %v", err)
	return 0
}

// jwtSegments splits a JWT and decodes its header and claims.
func jwtSegments(t *testing.T, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d segments", len(parts))
	}
	for i, into := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("JWT segment %d: %v", i, err)
		}
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("JWT segment %d: %v", i, err)
		}
	}
	return header, claims
}

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signRS256 signs header and claims with key, as an attacker holding a key
// of their own would.
func signRS256(t *testing.T, key *rsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// signHS256 signs with a shared secret: the classic confusion attack that
// uses a published public key as an HMAC secret.
func signHS256(t *testing.T, secret []byte, header, claims map[string]any) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// withClaims returns token with claims replaced and its original signature
// kept: a tampered token.
func withClaims(t *testing.T, token string, claims map[string]any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	return parts[0] + "." + b64JSON(t, claims) + "." + parts[2]
}

// recordedTokens are the bearer tokens the recorder saw that the plugin
// signed as the issuer, oldest first by iat.
func (r *tokenRecorder) issuerTokens(t *testing.T, issuer string) []string {
	t.Helper()
	r.mu.Lock()
	var all []string
	for _, tok := range r.tokens {
		all = append(all, tok)
	}
	r.mu.Unlock()
	var out []string
	iat := map[string]float64{}
	for _, tok := range all {
		_, c := jwtSegments(t, tok)
		if c["iss"] == issuer {
			out = append(out, tok)
			iat[tok], _ = c["iat"].(float64)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return int(iat[a] - iat[b]) })
	return out
}

// applyYAML runs kubectl apply -f on text as c's admin.
func applyYAML(t *testing.T, c *stack.KubeCluster, name, text string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := stack.WriteFile0600(p, []byte(text)); err != nil {
		t.Fatal(err)
	}
	res, err := c.KubectlAdmin(testCtx(t, 2*time.Minute), "apply", "-f", p)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl apply -f %s: %v\n%s", name, err, res)
	}
}

// ensureNamespaceWithPods creates ns, its pods' service account and the
// pods (Pending: no nodes) in c.
func ensureNamespaceWithPods(t *testing.T, c *stack.KubeCluster, ns string, pods map[string]map[string]string) {
	t.Helper()
	ctx := testCtx(t, 2*time.Minute)
	cs, err := c.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: stack.TargetPod, Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for name, lbls := range pods {
		if err := createLabelledPodIn(ctx, c.Kube, ns, name, lbls); err != nil {
			t.Fatal(err)
		}
	}
}

// checkData reads clusters/<name>/check; a failed check is returned as its
// error text.
func checkData(t *testing.T, cluster string) (map[string]any, error) {
	t.Helper()
	sec, err := vaultClient(t).Logical().ReadWithContext(testCtx(t, time.Minute), stack.Mount+"/clusters/"+cluster+"/check")
	if err != nil {
		return nil, err
	}
	if sec == nil {
		return nil, fmt.Errorf("check: empty response")
	}
	return sec.Data, nil
}

// holdsString reports whether want is a string anywhere in v.
func holdsString(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case map[string]any:
		for _, e := range x {
			if holdsString(e, want) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if holdsString(e, want) {
				return true
			}
		}
	}
	return false
}

// issueAndRevoke issues creds/<role>, checks that the token lists pods in
// ns on kube, and revokes the lease: one unit of the rotation load. It
// returns the first thing that went wrong.
func issueAndRevoke(ctx context.Context, c *vaultapi.Client, kube *stack.KubeCluster, role, ns string) error {
	sec, err := c.Logical().ReadWithContext(ctx, stack.Mount+"/creds/"+role)
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	if sec == nil || sec.LeaseID == "" {
		return fmt.Errorf("issue: no lease")
	}
	tok, _ := sec.Data["service_account_token"].(string)
	code, err := kube.TokenStatus(ctx, ns, tok)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("list pods with the issued token: HTTP %d", code)
	}
	if rerr := c.Sys().RevokeWithContext(ctx, sec.LeaseID); rerr != nil && err == nil {
		err = fmt.Errorf("revoke: %w", rerr)
	}
	return err
}
