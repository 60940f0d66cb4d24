package backend

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

const testIssuer = "https://vault.example.com:8200/v1/scanner"

// configureIssuer writes issuer/config with testIssuer and extra fields.
func configureIssuer(t testing.TB, b *backend, s logical.Storage, extra map[string]interface{}) *logical.Response {
	t.Helper()
	return mustOK(t, b, s, logical.UpdateOperation, "issuer/config", withFields(map[string]interface{}{"issuer": testIssuer}, extra))
}

// configureIssuerCluster writes cluster-a in issuer mode (after the issuer).
func configureIssuerCluster(t testing.TB, b *backend, s logical.Storage, host, ca string) {
	t.Helper()
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host": host, "kubernetes_ca_cert": ca, "use_issuer": true,
	})
}

// rawDocument reads an unauthenticated document as Vault would serve it:
// status, content type, cache control and body.
func rawDocument(t testing.TB, b *backend, s logical.Storage, path string) (int, string, string, []byte) {
	t.Helper()
	resp := mustOK(t, b, s, logical.ReadOperation, path, nil)
	if resp == nil {
		return 404, "", "", nil
	}
	body, _ := resp.Data[logical.HTTPRawBody].([]byte)
	status, _ := resp.Data[logical.HTTPStatusCode].(int)
	ctype, _ := resp.Data[logical.HTTPContentType].(string)
	cache, _ := resp.Data[logical.HTTPCacheControlHeader].(string)
	return status, ctype, cache, body
}

// publishedKeys is the JWKS the mount publishes now.
func publishedKeys(t testing.TB, b *backend, s logical.Storage) jose.JSONWebKeySet {
	t.Helper()
	status, _, _, body := rawDocument(t, b, s, wellKnownKeysPath)
	if status != 200 {
		t.Fatalf("%s: status %d", wellKnownKeysPath, status)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("JWKS does not parse: %v", err)
	}
	return set
}

func keyIDs(set jose.JSONWebKeySet) []string {
	var ids []string
	for _, k := range set.Keys {
		ids = append(ids, k.KeyID)
	}
	slices.Sort(ids)
	return ids
}

// verifyIssued verifies token as an API server would: signature by a key of
// set (chosen by kid), then the claims. It returns the header and claims.
func verifyIssued(t testing.TB, set jose.JSONWebKeySet, token string) (jose.Header, jwt.Claims, error) {
	t.Helper()
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return jose.Header{}, jwt.Claims{}, err
	}
	header := parsed.Headers[0]
	keys := set.Key(header.KeyID)
	if len(keys) != 1 {
		return header, jwt.Claims{}, errNoKey(header.KeyID)
	}
	var claims jwt.Claims
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		return header, jwt.Claims{}, err
	}
	return header, claims, nil
}

type errNoKey string

func (e errNoKey) Error() string { return "no published key with kid " + string(e) }

// signNow signs a token with the mount's current key, as a client would.
func signNow(t testing.TB, b *backend, s logical.Storage, audience, subject string, now time.Time) string {
	t.Helper()
	snap, err := b.issuerSnapshot(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := snap.sign(audience, subject, now)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func TestIssuerSigning(t *testing.T) {
	for _, alg := range []string{algRS256, algES256} {
		t.Run(alg, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			configureIssuer(t, b, s, map[string]interface{}{"signing_algorithm": alg, "token_ttl": "7m"})
			now := time.Now().Truncate(time.Second)
			token := signNow(t, b, s, "aud-1", "scanner:cluster-a", now)

			header, claims, err := verifyIssued(t, publishedKeys(t, b, s), token)
			if err != nil {
				t.Fatalf("token does not verify against the JWKS: %v", err)
			}
			current := currentKey(t, b, s)
			if header.KeyID != current.ID || header.Algorithm != alg || header.ExtraHeaders["typ"] != "JWT" {
				t.Errorf("header kid=%s alg=%s typ=%v, want kid=%s alg=%s typ=JWT", header.KeyID, header.Algorithm, header.ExtraHeaders["typ"], current.ID, alg)
			}
			err = claims.ValidateWithLeeway(jwt.Expected{Issuer: testIssuer, Subject: "scanner:cluster-a", AnyAudience: jwt.Audience{"aud-1"}, Time: now}, 0)
			if err != nil {
				t.Errorf("claims: %v", err)
			}
			if len(claims.Audience) != 1 || claims.ID == "" || claims.IssuedAt.Time() != now || claims.NotBefore.Time() != now || claims.Expiry.Time() != now.Add(7*time.Minute) {
				t.Errorf("claims aud=%v jti=%q iat=%v nbf=%v exp=%v", claims.Audience, claims.ID, claims.IssuedAt.Time(), claims.NotBefore.Time(), claims.Expiry.Time())
			}
			if other := signNow(t, b, s, "aud-1", "scanner:cluster-a", now); other == token {
				t.Error("two tokens signed at the same second are equal (jti not unique)")
			}
		})
	}
}

func currentKey(t testing.TB, b *backend, s logical.Storage) *signingKey {
	t.Helper()
	keys, err := getIssuerKeySet(context.Background(), s)
	if err != nil || keys == nil {
		t.Fatalf("key set: %v", err)
	}
	return keys.withState(keyCurrent)
}

// A cluster in issuer mode reaches the API server with a bearer token that
// verifies against the published keys, for the cluster's generated audience
// and its subject; the real client and a TLS API server on the wire.
func TestIssuerModeClientSendsVerifiableToken(t *testing.T) {
	api := newAPIServer(t)
	b, s, _ := newTestBackend(t)
	b.newKubeAPI = newClientsetAPI
	b.requestTimeout = 5 * time.Second
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, api.URL, api.caPEM)
	configureRole(t, b, s, nil)

	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	cluster := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster, nil).Data
	audience := cluster["issuer_audience"].(string)
	if !strings.HasPrefix(audience, issuerAudiencePrefix) || audience != issuerAudiencePrefix+cluster["endpoint_id"].(string) {
		t.Fatalf("issuer_audience = %q", audience)
	}
	seen := api.authorizations()
	if len(seen) == 0 {
		t.Fatal("the API server saw no request")
	}
	set := publishedKeys(t, b, s)
	for _, h := range seen {
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			t.Fatalf("Authorization %q is not a bearer token", h)
		}
		_, claims, err := verifyIssued(t, set, token)
		if err != nil {
			t.Fatalf("the API server got a token that does not verify: %v", err)
		}
		if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: testIssuer, Subject: "scanner:" + testCluster, AnyAudience: jwt.Audience{audience}, Time: time.Now()}, 0); err != nil {
			t.Errorf("claims: %v", err)
		}
	}
	// One token serves every call until half its life has passed.
	if distinct := slices.Compact(slices.Sorted(slices.Values(seen))); len(distinct) != 1 {
		t.Errorf("%d distinct tokens for %d calls, want 1 (cached)", len(distinct), len(seen))
	}
}

// The token source hands client-go's cache a token it keeps for half of
// its life, so a fresh one is signed well before the API server would
// reject the old one at exp.
func TestIssuerTokenSourceRefreshes(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, map[string]interface{}{"token_ttl": "10m"})
	now := time.Now()
	ts := &issuerTokenSource{b: b, storage: s, audience: "a", subject: "s", timeout: time.Second, now: func() time.Time { return now }}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(5 * time.Minute); !tok.Expiry.Equal(want) {
		t.Errorf("cached until %v, want %v (half of token_ttl)", tok.Expiry, want)
	}
}

func TestIssuerPeriodicRotation(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, map[string]interface{}{"rotation_period": "1h", "token_ttl": "5m"})
	ctx := context.Background()
	start, err := getIssuerKeySet(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	created := start.withState(keyNext).CreatedAt

	if err := b.periodicIssuerRotation(ctx, s, created.Add(59*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if currentKey(t, b, s).ID != start.withState(keyCurrent).ID {
		t.Fatal("rotated before the next key was published for a full rotation period")
	}
	if err := b.periodicIssuerRotation(ctx, s, created.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if currentKey(t, b, s).ID != start.withState(keyNext).ID {
		t.Fatal("did not rotate when due")
	}
	// The retired key is dropped once its tokens have expired, without a
	// rotation.
	retiredAt := created.Add(time.Hour)
	for _, tc := range []struct {
		at   time.Time
		keys int
	}{
		{retiredAt.Add(5*time.Minute + issuerClockSkew - time.Second), 3},
		{retiredAt.Add(5*time.Minute + issuerClockSkew), 2},
	} {
		if err := b.periodicIssuerRotation(ctx, s, tc.at); err != nil {
			t.Fatal(err)
		}
		keys, _ := getIssuerKeySet(ctx, s)
		if len(keys.Keys) != tc.keys {
			t.Errorf("at retirement+%s: %d keys, want %d", tc.at.Sub(retiredAt), len(keys.Keys), tc.keys)
		}
	}
}

// Only the active node rotates: periodic does nothing on a performance
// standby.
func TestIssuerPeriodicRotationActiveNodeOnly(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, map[string]interface{}{"rotation_period": "1m"})
	before := currentKey(t, b, s).ID
	b.System().(*logical.StaticSystemView).ReplicationStateVal = consts.ReplicationPerformanceStandby
	// periodic runs at time.Now: backdate the keys to make rotation due.
	keys, _ := getIssuerKeySet(context.Background(), s)
	for _, k := range keys.Keys {
		k.CreatedAt = k.CreatedAt.Add(-time.Hour)
	}
	if err := keys.save(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
		t.Fatal(err)
	}
	if currentKey(t, b, s).ID != before {
		t.Fatal("a performance standby rotated the keys")
	}
	b.System().(*logical.StaticSystemView).ReplicationStateVal = 0
	if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
		t.Fatal(err)
	}
	if currentKey(t, b, s).ID == before {
		t.Fatal("the active node did not rotate due keys")
	}
}

// BenchmarkIssuerSign is the cost of one token the plugin signs for its own
// calls (client-go caches it for half of token_ttl).
func BenchmarkIssuerSign(b *testing.B) {
	for _, alg := range []string{algRS256, algES256} {
		b.Run(alg, func(b *testing.B) {
			be, s, _ := newTestBackend(b)
			configureIssuer(b, be, s, map[string]interface{}{"signing_algorithm": alg})
			mustOK(b, be, s, logical.UpdateOperation, "issuer/rotate", nil) // the new algorithm signs
			snap, err := be.issuerSnapshot(context.Background(), s)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, _, err := snap.sign("vault-plugin-scanner:0123456789abcdef", "scanner:cluster-a", now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIssuerKeyGeneration is what a rotation costs in key generation.
func BenchmarkIssuerKeyGeneration(b *testing.B) {
	for _, alg := range []string{algRS256, algES256} {
		b.Run(alg, func(b *testing.B) {
			for range b.N {
				if _, err := newSigningKey(alg, keyNext, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// An API server that does not (yet) trust the issuer answers 401: a 502
// that says where the fix is.
func TestIssuerModeUntrustedIs502(t *testing.T) {
	api := newAPIServer(t)
	api.tokenStatus = apierrors.NewUnauthorized("invalid bearer token")
	b, s, _ := newTestBackend(t)
	b.newKubeAPI = newClientsetAPI
	b.requestTimeout = 5 * time.Second
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, api.URL, api.caPEM)
	configureRole(t, b, s, nil)
	code, msg := statusOf(request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil))
	if code != http.StatusBadGateway || !strings.Contains(msg, "clusters/"+testCluster+"/authentication-config") {
		t.Errorf("status %d %q, want 502 pointing at authentication-config", code, msg)
	}
}
