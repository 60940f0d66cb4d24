package backend

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/oauth2"
	"k8s.io/client-go/transport"
)

// The plugin as a token issuer Kubernetes trusts: its stored configuration,
// its signing keys (next, current, previous) and their rotation, signing,
// the published documents, and the token source a cluster in issuer mode
// authenticates with. No Kubernetes credential is stored for such a cluster:
// its API server verifies the plugin's JWTs against the keys published at
// .well-known/keys.

const (
	issuerConfigStorageKey = "issuer/config"
	// issuerKeysStorageKey holds the private keys: seal-wrapped, never read
	// back by any path.
	issuerKeysStorageKey = "issuer/keys"

	defaultIssuerRotationPeriod = 24 * time.Hour
	minIssuerRotationPeriod     = time.Minute
	// maxIssuerRotationPeriod keeps a key's life bounded: a year.
	maxIssuerRotationPeriod = 365 * 24 * time.Hour

	defaultIssuerTokenTTL = 5 * time.Minute
	minIssuerTokenTTL     = time.Minute
	maxIssuerTokenTTL     = time.Hour

	// issuerClockSkew is added to a retired key's publication: tokens it
	// signed may reach an API server whose clock runs behind, or be signed
	// by a node that had not yet seen the rotation.
	issuerClockSkew = time.Minute

	// issuerAudiencePrefix starts every audience the plugin signs for; the
	// rest is the endpoint's ID (issuerAudience).
	issuerAudiencePrefix = "vault-plugin-scanner:"

	// issuerDocumentMaxAge is the Cache-Control max-age of the published
	// documents: short, so a new key is seen soon. It is also how long a
	// next key is published before it may sign (backend.issuerKeyWarmUp):
	// a verifier that honours the max-age (kube-apiserver's OIDC key set
	// does) does not fetch the keys again for an unknown kid until its copy
	// expires, and would refuse tokens of a key it has not seen.
	issuerDocumentMaxAge = 60

	algRS256 = "RS256"
	algES256 = "ES256"
	// rsaKeyBits is the size of RS256 keys, the common choice of OIDC
	// providers (Vault's own identity tokens use it too).
	rsaKeyBits = 2048
)

// Key states: next is published and has never signed; current signs;
// previous signed until its retirement and stays published until NotAfter.
const (
	keyNext     = "next"
	keyCurrent  = "current"
	keyPrevious = "previous"
)

// issuerConfig is what the operator writes at issuer/config.
type issuerConfig struct {
	// Issuer is the https URL the API servers reach this mount at; the
	// tokens' iss and the discovery document's issuer.
	Issuer           string        `json:"issuer"`
	IssuerCACert     string        `json:"issuer_ca_cert,omitempty"`
	SigningAlgorithm string        `json:"signing_algorithm"`
	RotationPeriod   time.Duration `json:"rotation_period"`
	TokenTTL         time.Duration `json:"token_ttl"`
}

func defaultIssuerConfig() *issuerConfig {
	return &issuerConfig{SigningAlgorithm: algRS256, RotationPeriod: defaultIssuerRotationPeriod, TokenTTL: defaultIssuerTokenTTL}
}

// validate checks the configuration as it will be stored.
func (c *issuerConfig) validate() error {
	if err := validateIssuerURL(c.Issuer); err != nil {
		return err
	}
	if c.IssuerCACert != "" {
		if err := validateCACertPEM("issuer_ca_cert", c.IssuerCACert); err != nil {
			return err
		}
	}
	if c.SigningAlgorithm != algRS256 && c.SigningAlgorithm != algES256 {
		return fmt.Errorf("signing_algorithm must be %s or %s", algRS256, algES256)
	}
	if c.RotationPeriod < minIssuerRotationPeriod || c.RotationPeriod > maxIssuerRotationPeriod {
		return fmt.Errorf("rotation_period must be between %s and %s", minIssuerRotationPeriod, maxIssuerRotationPeriod)
	}
	if c.TokenTTL < minIssuerTokenTTL || c.TokenTTL > maxIssuerTokenTTL {
		return fmt.Errorf("token_ttl must be between %s and %s", minIssuerTokenTTL, maxIssuerTokenTTL)
	}
	return nil
}

// validateIssuerURL: an API server fetches discovery only over https, and
// compares the URL with the tokens' iss byte for byte, so it must have one
// spelling: no query, fragment, user info or trailing slash.
func validateIssuerURL(raw string) error {
	if raw == "" {
		return errors.New("issuer is required: the https URL at which the API servers reach this mount, e.g. https://vault.example.com:8200/v1/scanner")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("issuer does not parse as a URL")
	case u.Scheme != "https":
		return errors.New("issuer must be an https:// URL: Kubernetes fetches an issuer's keys only over https")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("issuer must name a host")
	case u.User != nil:
		return errors.New("issuer must not carry user info")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("issuer must not have a query or fragment")
	case strings.HasSuffix(raw, "/"):
		return errors.New("issuer must not end with a slash: the tokens' iss must equal it exactly")
	case len(raw) > 2048:
		return errors.New("issuer is longer than 2048 characters")
	}
	return nil
}

func getIssuerConfig(ctx context.Context, s logical.Storage) (*issuerConfig, error) {
	entry, err := s.Get(ctx, issuerConfigStorageKey)
	if err != nil {
		return nil, fmt.Errorf("reading the issuer configuration: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	cfg := &issuerConfig{}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, fmt.Errorf("decoding the issuer configuration: %w", err)
	}
	return cfg, nil
}

func (c *issuerConfig) save(ctx context.Context, s logical.Storage) error {
	entry, err := logical.StorageEntryJSON(issuerConfigStorageKey, c)
	if err != nil {
		return fmt.Errorf("encoding the issuer configuration: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing the issuer configuration: %w", err)
	}
	return nil
}

// signingKey is one key of the set. The private key is stored (PKCS #8)
// and parsed on load; nothing that reads a key set returns it.
type signingKey struct {
	ID         string    `json:"kid"`
	Algorithm  string    `json:"alg"`
	State      string    `json:"state"`
	PrivateKey []byte    `json:"private_key"`
	CreatedAt  time.Time `json:"created_at"`
	// RetiredAt is when it stopped signing (previous keys).
	RetiredAt time.Time `json:"retired_at,omitzero"`
	// NotAfter is when a previous key stops being published: every token
	// it signed has expired by then.
	NotAfter time.Time `json:"not_after,omitzero"`
	// TokenTTL is the longest token lifetime the key signed (or may sign)
	// with, so its publication outlives its tokens even when token_ttl was
	// shortened meanwhile.
	TokenTTL time.Duration `json:"token_ttl,omitempty"`

	signer crypto.Signer
}

// public is the key as the JWKS publishes it.
func (k *signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.signer.Public(), KeyID: k.ID, Algorithm: k.Algorithm, Use: "sig"}
}

func newSigningKey(alg, state string, now time.Time) (*signingKey, error) {
	var signer crypto.Signer
	var err error
	switch alg {
	case algRS256:
		signer, err = rsa.GenerateKey(rand.Reader, rsaKeyBits)
	case algES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("unsupported signing algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generating a signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("encoding a signing key: %w", err)
	}
	// The kid is the public key's RFC 7638 thumbprint: unique per key, and
	// it says nothing else.
	thumb, err := (&jose.JSONWebKey{Key: signer.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("computing a key ID: %w", err)
	}
	return &signingKey{
		ID: base64.RawURLEncoding.EncodeToString(thumb), Algorithm: alg, State: state,
		PrivateKey: der, CreatedAt: now.UTC(), signer: signer,
	}, nil
}

// issuerKeySet is the stored set: one next, one current, any number of
// previous keys still published.
type issuerKeySet struct {
	Keys          []*signingKey `json:"keys"`
	LastRotatedAt time.Time     `json:"last_rotated_at"`
}

// newIssuerKeySet starts a set: a current key that signs at once (it is
// published from the moment it exists, before any API server trusts the
// issuer) and a next one.
func newIssuerKeySet(cfg *issuerConfig, now time.Time) (*issuerKeySet, error) {
	current, err := newSigningKey(cfg.SigningAlgorithm, keyCurrent, now)
	if err != nil {
		return nil, err
	}
	current.TokenTTL = cfg.TokenTTL
	next, err := newSigningKey(cfg.SigningAlgorithm, keyNext, now)
	if err != nil {
		return nil, err
	}
	return &issuerKeySet{Keys: []*signingKey{current, next}, LastRotatedAt: now.UTC()}, nil
}

func (ks *issuerKeySet) withState(state string) *signingKey {
	for _, k := range ks.Keys {
		if k.State == state {
			return k
		}
	}
	return nil
}

// nextRotation is when the periodic function rotates: once the next key
// has been published for a full rotation period.
func (ks *issuerKeySet) nextRotation(cfg *issuerConfig) time.Time {
	next := ks.withState(keyNext)
	if next == nil {
		return time.Time{}
	}
	return next.CreatedAt.Add(cfg.RotationPeriod).UTC()
}

// rotate makes next current, current previous (published until every token
// it signed has expired) and a new next, and drops expired previous keys.
// It refuses while the next key has been published for less than warmUp.
func (ks *issuerKeySet) rotate(cfg *issuerConfig, now time.Time, warmUp time.Duration) error {
	if next := ks.withState(keyNext); next != nil && now.Before(next.CreatedAt.Add(warmUp)) {
		signsFrom := next.CreatedAt.Add(warmUp).UTC()
		return userError{fmt.Errorf("the next key %s has been published only since %s, and API servers may keep an earlier copy of the key set for %s: it may sign from %s, rotate then",
			next.ID, next.CreatedAt.Format(time.RFC3339), warmUp, signsFrom.Format(time.RFC3339))}
	}
	fresh, err := newSigningKey(cfg.SigningAlgorithm, keyNext, now)
	if err != nil {
		return err
	}
	ks.prune(now)
	for _, k := range ks.Keys {
		switch k.State {
		case keyCurrent:
			k.State, k.RetiredAt = keyPrevious, now.UTC()
			k.NotAfter = now.Add(max(k.TokenTTL, cfg.TokenTTL) + issuerClockSkew).UTC()
		case keyNext:
			k.State, k.TokenTTL = keyCurrent, cfg.TokenTTL
		}
	}
	ks.Keys = append(ks.Keys, fresh)
	ks.LastRotatedAt = now.UTC()
	return nil
}

// prune drops previous keys no unexpired token can name; it reports
// whether it dropped any.
func (ks *issuerKeySet) prune(now time.Time) bool {
	n := len(ks.Keys)
	ks.Keys = slices.DeleteFunc(ks.Keys, func(k *signingKey) bool { return k.State == keyPrevious && !now.Before(k.NotAfter) })
	return len(ks.Keys) != n
}

// applyConfig adapts the set to a changed configuration: the current key
// will sign with the new token_ttl, so its publication must cover it; a
// new signing_algorithm replaces the next key, which never signed, so it
// takes effect at the following rotation.
func (ks *issuerKeySet) applyConfig(cfg *issuerConfig, now time.Time) error {
	if current := ks.withState(keyCurrent); current != nil {
		current.TokenTTL = max(current.TokenTTL, cfg.TokenTTL)
	}
	next := ks.withState(keyNext)
	if next == nil || next.Algorithm == cfg.SigningAlgorithm {
		return nil
	}
	fresh, err := newSigningKey(cfg.SigningAlgorithm, keyNext, now)
	if err != nil {
		return err
	}
	ks.Keys = slices.DeleteFunc(ks.Keys, func(k *signingKey) bool { return k == next })
	ks.Keys = append(ks.Keys, fresh)
	return nil
}

// published are the keys the JWKS lists at now.
func (ks *issuerKeySet) published(now time.Time) []*signingKey {
	var out []*signingKey
	for _, k := range ks.Keys {
		if k.State != keyPrevious || now.Before(k.NotAfter) {
			out = append(out, k)
		}
	}
	return out
}

// describe is what issuer/config reads say about the keys: never key
// material.
func (ks *issuerKeySet) describe() []map[string]interface{} {
	order := map[string]int{keyNext: 0, keyCurrent: 1, keyPrevious: 2}
	keys := slices.Clone(ks.Keys)
	slices.SortStableFunc(keys, func(a, b *signingKey) int { return order[a.State] - order[b.State] })
	out := make([]map[string]interface{}, 0, len(keys))
	for _, k := range keys {
		out = append(out, map[string]interface{}{
			"kid": k.ID, "state": k.State, "algorithm": k.Algorithm,
			"created_at": formatTime(k.CreatedAt), "retired_at": formatTime(k.RetiredAt), "not_after": formatTime(k.NotAfter),
		})
	}
	return out
}

func getIssuerKeySet(ctx context.Context, s logical.Storage) (*issuerKeySet, error) {
	entry, err := s.Get(ctx, issuerKeysStorageKey)
	if err != nil {
		return nil, fmt.Errorf("reading the issuer's signing keys: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	ks := &issuerKeySet{}
	if err := entry.DecodeJSON(ks); err != nil {
		return nil, fmt.Errorf("decoding the issuer's signing keys: %w", err)
	}
	for _, k := range ks.Keys {
		parsed, err := x509.ParsePKCS8PrivateKey(k.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("decoding signing key %s: %w", k.ID, err)
		}
		signer, ok := parsed.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("signing key %s is not a signing key", k.ID)
		}
		k.signer = signer
	}
	return ks, nil
}

func (ks *issuerKeySet) save(ctx context.Context, s logical.Storage) error {
	entry, err := logical.StorageEntryJSON(issuerKeysStorageKey, ks)
	if err != nil {
		return fmt.Errorf("encoding the issuer's signing keys: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing the issuer's signing keys: %w", err)
	}
	return nil
}

// issuerSnapshot is the issuer as loaded from storage: configuration and
// parsed keys, immutable once built. A nil cfg means not configured.
type issuerSnapshot struct {
	cfg  *issuerConfig
	keys *issuerKeySet
}

func (snap *issuerSnapshot) configured() bool { return snap.cfg != nil && snap.keys != nil }

// issuerState is the backend's in-memory view of the issuer: writes and
// rotations serialise on mu; snap caches what storage holds, dropped on
// every change (invalidate on other nodes).
type issuerState struct {
	mu sync.Mutex

	snapLock sync.RWMutex
	snap     *issuerSnapshot
}

func (st *issuerState) drop() {
	st.snapLock.Lock()
	defer st.snapLock.Unlock()
	st.snap = nil
}

// issuerSnapshot returns the cached issuer, loading it on first use.
func (b *backend) issuerSnapshot(ctx context.Context, s logical.Storage) (*issuerSnapshot, error) {
	st := &b.issuer
	st.snapLock.RLock()
	snap := st.snap
	st.snapLock.RUnlock()
	if snap != nil {
		return snap, nil
	}
	st.snapLock.Lock()
	defer st.snapLock.Unlock()
	if st.snap != nil {
		return st.snap, nil
	}
	cfg, err := getIssuerConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	keys, err := getIssuerKeySet(ctx, s)
	if err != nil {
		return nil, err
	}
	st.snap = &issuerSnapshot{cfg: cfg, keys: keys}
	return st.snap, nil
}

// sign signs a token for audience and subject with the current key.
func (snap *issuerSnapshot) sign(audience, subject string, now time.Time) (string, time.Time, error) {
	if !snap.configured() {
		return "", time.Time{}, errIssuerNotConfigured
	}
	key := snap.keys.withState(keyCurrent)
	if key == nil {
		return "", time.Time{}, errors.New("the issuer has no current signing key")
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: jose.JSONWebKey{Key: key.signer, KeyID: key.ID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("preparing to sign: %w", err)
	}
	exp := now.Add(snap.cfg.TokenTTL)
	claims := jwt.Claims{
		Issuer:    snap.cfg.Issuer,
		Subject:   subject,
		Audience:  jwt.Audience{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(exp),
		ID:        uuid.NewString(),
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signing: %w", err)
	}
	return token, exp, nil
}

var errIssuerNotConfigured = userError{errors.New("the issuer is not configured: write issuer/config first")}

// discoveryDocument is the OpenID provider metadata an API server reads
// at <issuer>/.well-known/openid-configuration: where the keys are, and
// nothing else.
func (snap *issuerSnapshot) discoveryDocument(now time.Time) ([]byte, error) {
	algs := []string{snap.cfg.SigningAlgorithm}
	for _, k := range snap.keys.published(now) {
		if !slices.Contains(algs, k.Algorithm) {
			algs = append(algs, k.Algorithm)
		}
	}
	return json.Marshal(map[string]interface{}{
		"issuer":                                snap.cfg.Issuer,
		"jwks_uri":                              snap.cfg.Issuer + "/.well-known/keys",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": algs,
	})
}

// jwks is the JSON Web Key Set of the published public keys.
func (snap *issuerSnapshot) jwks(now time.Time) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range snap.keys.published(now) {
		set.Keys = append(set.Keys, k.public())
	}
	return json.Marshal(set)
}

// issuerUsername is the user an API server configured by
// clusters/<name>/authentication-config authenticates a token as: the
// subject prefixed with the issuer, so no other issuer's user can clash.
func issuerUsername(issuer, subject string) string { return issuer + "#" + subject }

// issuerTokenSource signs the tokens of one cluster endpoint in issuer
// mode; wrapped in client-go's caching token source, it re-signs once half
// a token's life has passed (the API server rejects it at exp).
type issuerTokenSource struct {
	b                 *backend
	storage           logical.Storage
	audience, subject string
	timeout           time.Duration
	now               func() time.Time
}

func (ts *issuerTokenSource) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ts.timeout)
	defer cancel()
	snap, err := ts.b.issuerSnapshot(ctx, ts.storage)
	if err != nil {
		return nil, err
	}
	now := ts.now()
	token, exp, err := snap.sign(ts.audience, ts.subject, now)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: token, TokenType: "Bearer", Expiry: now.Add(exp.Sub(now) / 2)}, nil
}

// useIssuerTokens makes ep's client authenticate with tokens the plugin
// signs for cfg's endpoint: client-go caches a token and asks for a new
// one when half its life has passed, or after a 401.
func (b *backend) useIssuerTokens(ctx context.Context, s logical.Storage, ep *endpoint, cfg *clusterConfig) error {
	snap, err := b.issuerSnapshot(ctx, s)
	if err != nil {
		return err
	}
	if !snap.configured() {
		return errIssuerNotConfigured
	}
	ts := &issuerTokenSource{b: b, storage: s, audience: cfg.issuerAudience(), subject: cfg.IssuerSubject, timeout: b.requestTimeout, now: time.Now}
	ep.restConfig.WrapTransport = transport.ResettableTokenSourceWrapTransport(transport.NewCachedTokenSource(ts))
	return nil
}

// rotateIssuerKeys rotates the signing keys now (issuer/rotate, or the
// periodic function when due). The caller holds b.issuer.mu.
func (b *backend) rotateIssuerKeys(ctx context.Context, s logical.Storage, now time.Time) (*issuerConfig, *issuerKeySet, error) {
	cfg, err := getIssuerConfig(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	keys, err := getIssuerKeySet(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	if cfg == nil || keys == nil {
		return nil, nil, errIssuerNotConfigured
	}
	if err := keys.rotate(cfg, now, b.issuerKeyWarmUp); err != nil {
		return nil, nil, err
	}
	if err := keys.save(ctx, s); err != nil {
		return nil, nil, err
	}
	b.issuer.drop()
	current := keys.withState(keyCurrent)
	b.Logger().Info("rotated the issuer's signing keys", "current_kid", current.ID, "next_kid", keys.withState(keyNext).ID)
	return cfg, keys, nil
}

// periodicIssuerRotation rotates the keys once the next key has been
// published for a full rotation period, and otherwise drops previous keys
// whose tokens have all expired. It runs on the active node only.
func (b *backend) periodicIssuerRotation(ctx context.Context, s logical.Storage, now time.Time) error {
	b.issuer.mu.Lock()
	defer b.issuer.mu.Unlock()
	cfg, err := getIssuerConfig(ctx, s)
	if err != nil || cfg == nil {
		return err
	}
	keys, err := getIssuerKeySet(ctx, s)
	if err != nil || keys == nil {
		return err
	}
	if due := keys.nextRotation(cfg); !due.IsZero() && !now.Before(due) {
		_, _, err := b.rotateIssuerKeys(ctx, s, now)
		return err
	}
	if !keys.prune(now) {
		return nil
	}
	if err := keys.save(ctx, s); err != nil {
		return err
	}
	b.issuer.drop()
	return nil
}
