package backend

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestIssuerConfigDefaults(t *testing.T) {
	b, s, _ := newTestBackend(t)
	if resp := mustOK(t, b, s, logical.ReadOperation, "issuer/config", nil); resp != nil {
		t.Fatalf("read before any write = %v, want nothing", resp.Data)
	}
	written := configureIssuer(t, b, s, nil).Data
	read := mustOK(t, b, s, logical.ReadOperation, "issuer/config", nil).Data
	for _, data := range []map[string]interface{}{written, read} {
		if data["issuer"] != testIssuer || data["signing_algorithm"] != algRS256 || data["rotation_period"] != int64(86400) || data["token_ttl"] != int64(300) || data["issuer_ca_cert"] != "" {
			t.Errorf("config = %v", data)
		}
		keys := data["keys"].([]map[string]interface{})
		var states []string
		for _, k := range keys {
			states = append(states, k["state"].(string))
			if k["kid"] == "" || k["created_at"] == "" {
				t.Errorf("key %v lacks kid or created_at", k)
			}
		}
		if !slices.Equal(states, []string{keyNext, keyCurrent}) {
			t.Errorf("key states = %v, want next, current", states)
		}
		next, _ := time.Parse(time.RFC3339, data["next_rotation"].(string))
		if until := time.Until(next); until < 23*time.Hour || until > 24*time.Hour {
			t.Errorf("next_rotation in %s, want about 24h", until)
		}
	}
	// An update keeps what it does not name.
	mustOK(t, b, s, logical.UpdateOperation, "issuer/config", map[string]interface{}{"token_ttl": "10m"})
	read = mustOK(t, b, s, logical.ReadOperation, "issuer/config", nil).Data
	if read["issuer"] != testIssuer || read["token_ttl"] != int64(600) {
		t.Errorf("after an update of token_ttl: %v", read)
	}
}

func TestIssuerConfigRefusals(t *testing.T) {
	cases := []struct {
		name   string
		fields map[string]interface{}
		want   string
	}{
		{"no issuer", map[string]interface{}{"issuer": nil}, "issuer is required"},
		{"http issuer", map[string]interface{}{"issuer": "http://vault.example.com:8200/v1/scanner"}, "https"},
		{"no scheme", map[string]interface{}{"issuer": "vault.example.com/v1/scanner"}, "https"},
		{"query", map[string]interface{}{"issuer": testIssuer + "?x=1"}, "query or fragment"},
		{"empty query", map[string]interface{}{"issuer": testIssuer + "?"}, "query or fragment"},
		{"fragment", map[string]interface{}{"issuer": testIssuer + "#x"}, "query or fragment"},
		{"trailing slash", map[string]interface{}{"issuer": testIssuer + "/"}, "slash"},
		{"user info", map[string]interface{}{"issuer": "https://u:p@vault.example.com/v1/scanner"}, "user info"},
		{"no host", map[string]interface{}{"issuer": "https:///v1/scanner"}, "host"},
		{"algorithm", map[string]interface{}{"signing_algorithm": "HS256"}, "signing_algorithm"},
		{"algorithm none", map[string]interface{}{"signing_algorithm": "none"}, "signing_algorithm"},
		{"short rotation", map[string]interface{}{"rotation_period": "30s"}, "rotation_period"},
		{"short token_ttl", map[string]interface{}{"token_ttl": "30s"}, "token_ttl"},
		{"long token_ttl", map[string]interface{}{"token_ttl": "2h"}, "token_ttl"},
		{"CA is a key", map[string]interface{}{"issuer_ca_cert": testPrivateKeyPEM(t)}, "private key"},
		{"unknown field", map[string]interface{}{"audience": "x"}, "unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newTestBackend(t)
			mustBadRequest(t, b, s, logical.UpdateOperation, "issuer/config", withFields(map[string]interface{}{"issuer": testIssuer}, tc.fields), tc.want)
			if keys, _ := getIssuerKeySet(context.Background(), s); keys != nil {
				t.Error("a refused write stored keys")
			}
		})
	}
}

// The issuer cannot change while a cluster entry, or a retired endpoint
// still revoking leases, authenticates with it: their API servers trust
// only the old URL.
func TestIssuerChangeWhileInUse(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	moved := map[string]interface{}{"issuer": "https://vault2.example.com/v1/scanner"}
	mustBadRequest(t, b, s, logical.UpdateOperation, "issuer/config", moved, `cluster(s) `+testCluster+` authenticate`)
	// Other settings may change.
	mustOK(t, b, s, logical.UpdateOperation, "issuer/config", map[string]interface{}{"issuer": testIssuer, "token_ttl": "2m"})

	// Out of issuer mode, the retired endpoint still revokes with it.
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"use_issuer": false, "service_account_jwt": testRequesterJWT})
	mustBadRequest(t, b, s, logical.UpdateOperation, "issuer/config", moved, "retired endpoint")

	// Once nothing uses it, it may change.
	if _, err := b.pruneRetiredEndpoints(context.Background(), s, time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	mustOK(t, b, s, logical.UpdateOperation, "issuer/config", moved)
}

func TestIssuerRotate(t *testing.T) {
	b, s, _ := newTestBackend(t)
	mustBadRequest(t, b, s, logical.UpdateOperation, "issuer/rotate", nil, "write issuer/config first")
	configureIssuer(t, b, s, nil)
	before, _ := getIssuerKeySet(context.Background(), s)
	resp := mustOK(t, b, s, logical.UpdateOperation, "issuer/rotate", nil)
	keys := resp.Data["keys"].([]map[string]interface{})
	byState := map[string]string{}
	for _, k := range keys {
		byState[k["state"].(string)] = k["kid"].(string)
	}
	if byState[keyCurrent] != before.withState(keyNext).ID || byState[keyPrevious] != before.withState(keyCurrent).ID || byState[keyNext] == "" || len(keys) != 3 {
		t.Errorf("after rotate: %v", byState)
	}
	for _, k := range keys {
		if k["state"] == keyPrevious && k["not_after"] == "" {
			t.Errorf("previous key without not_after: %v", k)
		}
	}
}

// A token signed just before a rotation still verifies against the JWKS
// after it; the next key is published before it ever signs; a previous key
// is dropped once every token it signed has expired.
func TestIssuerRotationOverlap(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, map[string]interface{}{"token_ttl": "5m"})
	ctx := context.Background()
	start, _ := getIssuerKeySet(ctx, s)
	k1, k2 := start.withState(keyCurrent).ID, start.withState(keyNext).ID

	if ids := keyIDs(publishedKeys(t, b, s)); !slices.Equal(ids, sortedIDs(k1, k2)) {
		t.Fatalf("published %v, want current and next", ids)
	}
	now := time.Now()
	before := signNow(t, b, s, "aud", "sub", now)
	mustOK(t, b, s, logical.UpdateOperation, "issuer/rotate", nil)
	set := publishedKeys(t, b, s)
	if header, _, err := verifyIssued(t, set, before); err != nil || header.KeyID != k1 {
		t.Fatalf("a token signed before the rotation: kid %s, %v", header.KeyID, err)
	}
	after := signNow(t, b, s, "aud", "sub", now)
	if header, _, err := verifyIssued(t, set, after); err != nil || header.KeyID != k2 {
		t.Fatalf("after the rotation the signing key is %s (%v), want the former next %s", header.KeyID, err, k2)
	}
	rotated, _ := getIssuerKeySet(ctx, s)
	k3 := rotated.withState(keyNext).ID
	if ids := keyIDs(set); !slices.Equal(ids, sortedIDs(k1, k2, k3)) {
		t.Fatalf("published %v, want previous, current and next", ids)
	}
	// The previous key goes once its tokens have expired: its retirement,
	// plus token_ttl, plus the clock skew.
	notAfter := rotated.Keys[slices.IndexFunc(rotated.Keys, func(k *signingKey) bool { return k.ID == k1 })].NotAfter
	if want := rotated.LastRotatedAt.Add(5*time.Minute + issuerClockSkew); !notAfter.Equal(want) {
		t.Errorf("previous key published until %v, want %v", notAfter, want)
	}
	snap, _ := b.issuerSnapshot(ctx, s)
	var published struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	body, _ := snap.jwks(notAfter)
	_ = json.Unmarshal(body, &published)
	if len(published.Keys) != 2 || slices.ContainsFunc(published.Keys, func(k struct {
		Kid string `json:"kid"`
	}) bool {
		return k.Kid == k1
	}) {
		t.Errorf("at its not_after the previous key is still published: %v", published.Keys)
	}
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// A new signing_algorithm replaces the next key (which never signed), so it
// signs from the following rotation; a longer token_ttl extends how long
// the current key stays published after its retirement.
func TestIssuerConfigChangeKeys(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	ctx := context.Background()
	start, _ := getIssuerKeySet(ctx, s)
	mustOK(t, b, s, logical.UpdateOperation, "issuer/config", map[string]interface{}{"signing_algorithm": "es256", "token_ttl": "20m"})
	mustOK(t, b, s, logical.UpdateOperation, "issuer/config", map[string]interface{}{"token_ttl": "2m"})
	changed, _ := getIssuerKeySet(ctx, s)
	if changed.withState(keyCurrent).ID != start.withState(keyCurrent).ID || changed.withState(keyCurrent).Algorithm != algRS256 {
		t.Error("an algorithm change replaced the current key")
	}
	next := changed.withState(keyNext)
	if next.ID == start.withState(keyNext).ID || next.Algorithm != algES256 {
		t.Errorf("next key %s %s, want a new ES256 key", next.ID, next.Algorithm)
	}
	mustOK(t, b, s, logical.UpdateOperation, "issuer/rotate", nil)
	rotated, _ := getIssuerKeySet(ctx, s)
	prev := rotated.withState(keyPrevious)
	if got := prev.NotAfter.Sub(prev.RetiredAt); got != 20*time.Minute+issuerClockSkew {
		t.Errorf("previous key published %s after retirement, want the longest token_ttl it signed with (20m) plus skew", got)
	}
	if token := signNow(t, b, s, "a", "s", time.Now()); !strings.HasPrefix(token, "eyJhbGciOiJFUzI1NiI") {
		t.Errorf("after rotation the token is not ES256: %.30s", token)
	}
	doc := discovery(t, b, s)
	if algs := doc["id_token_signing_alg_values_supported"]; !slices.Equal(toStrings(algs), []string{algES256, algRS256}) {
		t.Errorf("algorithms = %v, want ES256 then RS256 (still published)", algs)
	}
}

func discovery(t *testing.T, b *backend, s logical.Storage) map[string]interface{} {
	t.Helper()
	status, ctype, _, body := rawDocument(t, b, s, wellKnownDiscoveryPath)
	if status != 200 || ctype != "application/json" {
		t.Fatalf("discovery: status %d, content type %q", status, ctype)
	}
	var doc map[string]interface{}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func toStrings(v interface{}) []string {
	var out []string
	for _, x := range v.([]interface{}) {
		out = append(out, x.(string))
	}
	return out
}

func TestWellKnownDocuments(t *testing.T) {
	b, s, _ := newTestBackend(t)
	for _, path := range []string{wellKnownDiscoveryPath, wellKnownKeysPath} {
		if status, _, _, _ := rawDocument(t, b, s, path); status != 404 {
			t.Errorf("%s before the issuer is configured: %d, want 404", path, status)
		}
		if !slices.Contains(b.PathsSpecial.Unauthenticated, path) {
			t.Errorf("%s is not unauthenticated", path)
		}
	}
	configureIssuer(t, b, s, nil)

	doc := discovery(t, b, s)
	want := map[string]interface{}{
		"issuer":                                testIssuer,
		"jwks_uri":                              testIssuer + "/.well-known/keys",
		"response_types_supported":              []interface{}{"id_token"},
		"subject_types_supported":               []interface{}{"public"},
		"id_token_signing_alg_values_supported": []interface{}{algRS256},
	}
	if got := mustJSON(t, doc); got != mustJSON(t, want) {
		t.Errorf("discovery = %s, want exactly %s", got, mustJSON(t, want))
	}

	status, ctype, cache, body := rawDocument(t, b, s, wellKnownKeysPath)
	if status != 200 || ctype != "application/json" || cache != "max-age=60" {
		t.Errorf("keys: status %d, content type %q, cache control %q", status, ctype, cache)
	}
	var raw struct {
		Keys []map[string]interface{} `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Keys) != 2 {
		t.Fatalf("%d keys published, want 2", len(raw.Keys))
	}
	for _, k := range raw.Keys {
		if got := sortedKeys(k); !slices.Equal(got, []string{"alg", "e", "kid", "kty", "n", "use"}) {
			t.Errorf("an RSA key publishes %v, want exactly alg, e, kid, kty, n, use", got)
		}
	}
	// ES256 keys publish their curve point only.
	mustOK(t, b, s, logical.UpdateOperation, "issuer/config", map[string]interface{}{"signing_algorithm": algES256})
	_, _, _, body = rawDocument(t, b, s, wellKnownKeysPath)
	raw.Keys = nil
	_ = json.Unmarshal(body, &raw)
	for _, k := range raw.Keys {
		if k["kty"] == "EC" && !slices.Equal(sortedKeys(k), []string{"alg", "crv", "kid", "kty", "use", "x", "y"}) {
			t.Errorf("an EC key publishes %v", sortedKeys(k))
		}
	}
}

// Signing keys are seal-wrapped; the configuration holds nothing secret.
func TestIssuerKeysSealWrapped(t *testing.T) {
	b, _, _ := newTestBackend(t)
	if !slices.Contains(b.PathsSpecial.SealWrapStorage, issuerKeysStorageKey) {
		t.Errorf("SealWrapStorage %v lacks %s", b.PathsSpecial.SealWrapStorage, issuerKeysStorageKey)
	}
}

// A standby learns of a rotation through Invalidate and signs with the new
// key at once.
func TestIssuerInvalidate(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	ctx := context.Background()
	k1 := currentKey(t, b, s).ID
	if _, err := b.issuerSnapshot(ctx, s); err != nil {
		t.Fatal(err)
	}
	// Another node rotates: storage changes behind this node's cache.
	keys, _ := getIssuerKeySet(ctx, s)
	if err := keys.rotate(defaultIssuerConfig(), time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if err := keys.save(ctx, s); err != nil {
		t.Fatal(err)
	}
	header := func() string {
		h, _, _ := verifyIssued(t, publishedKeys(t, b, s), signNow(t, b, s, "a", "s", time.Now()))
		return h.KeyID
	}
	if header() != k1 {
		t.Fatal("the cache did not hold")
	}
	b.Invalidate(ctx, issuerKeysStorageKey)
	if got := header(); got == k1 || got != keys.withState(keyCurrent).ID {
		t.Errorf("after Invalidate the signing key is %s, want %s", got, keys.withState(keyCurrent).ID)
	}
}

// A next key signs only once it has been published for the documents'
// max-age: an API server that fetched the key set just before the key
// existed does not fetch it again for an unknown kid until its copy
// expires. Rotating earlier is a 400 that changes nothing.
func TestIssuerRotateWaitsForWarmUp(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	ctx := context.Background()
	keys, err := getIssuerKeySet(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	next := keys.withState(keyNext)
	warmUp := issuerDocumentMaxAge * time.Second
	for _, tc := range []struct {
		name   string
		after  time.Duration
		wantOK bool
	}{
		{"right after the key was made", 0, false},
		{"a second before its warm-up ends", warmUp - time.Second, false},
		{"when its warm-up ends", warmUp, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks, _ := getIssuerKeySet(ctx, s)
			err := ks.rotate(defaultIssuerConfig(), next.CreatedAt.Add(tc.after), warmUp)
			if tc.wantOK != (err == nil) {
				t.Fatalf("rotate %s after the next key was made: %v, want ok=%v", tc.after, err, tc.wantOK)
			}
			if err != nil && (!errors.As(err, new(userError)) || !strings.Contains(err.Error(), "may sign from")) {
				t.Errorf("refusal %v: want a user error saying when the key may sign", err)
			}
			if err == nil && ks.withState(keyCurrent).ID != next.ID {
				t.Errorf("current key %s, want the warmed-up next key %s", ks.withState(keyCurrent).ID, next.ID)
			}
		})
	}

	b.issuerKeyWarmUp = warmUp
	mustBadRequest(t, b, s, logical.UpdateOperation, "issuer/rotate", nil, "may sign from")
	if got := currentKey(t, b, s).ID; got == next.ID {
		t.Errorf("a refused rotation made %s current", got)
	}
}
