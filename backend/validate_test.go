package backend

import (
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
)

// checkValidation fails unless err is nil when want is "", or else an error
// mentioning want.
func checkValidation(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("want no error, got %v", err)
	case want != "" && err == nil:
		t.Fatalf("want an error mentioning %q, got none", want)
	case want != "" && !containsFold(err.Error(), want):
		t.Fatalf("error %q does not mention %q", err, want)
	}
}

func TestValidateCACertPEM(t *testing.T) {
	ca := testCAPEM(t)
	key := testPrivateKeyPEM(t)
	pkcs8 := strings.ReplaceAll(key, "EC PRIVATE KEY", "PRIVATE KEY")
	publicKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("not really a key")}))
	junkCert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))

	tests := []struct {
		name, value, want string
	}{
		{"one certificate", ca, ""},
		{"bundle of two", ca + ca, ""},
		{"openssl text before the block", "subject=CN = test-ca\n" + ca, ""},
		{"empty", "", "at least one certificate"},
		{"not PEM", "this is not a certificate", "at least one certificate"},
		{"base64 without armour", base64.StdEncoding.EncodeToString([]byte("x")), "at least one certificate"},
		{"EC private key", key, "private key"},
		{"PKCS#8 private key", pkcs8, "private key"},
		{"RSA private key", strings.ReplaceAll(key, "EC PRIVATE KEY", "RSA PRIVATE KEY"), "private key"},
		{"certificate followed by its key", ca + key, "private key"},
		{"public key", publicKey, `type "PUBLIC KEY"`},
		{"certificate then public key", ca + publicKey, `type "PUBLIC KEY"`},
		{"certificate block that is not DER", junkCert, "does not parse"},
		{"trailing garbage", ca + "garbage", "trailing data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateCACertPEM("kubernetes_ca_cert", tc.value)
			checkValidation(t, err, tc.want)
			if err == nil {
				return
			}
			if !strings.HasPrefix(err.Error(), "kubernetes_ca_cert ") {
				t.Errorf("error %q does not name the field", err)
			}
			// A pasted key must never be echoed back.
			if body := pemBody(key); strings.Contains(err.Error(), body[:20]) {
				t.Errorf("error %q echoes key material", err)
			}
		})
	}
}

// pemBody is the base64 part of a single PEM block.
func pemBody(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[1:len(lines)-1], "")
}

func TestValidateHTTPSURL(t *testing.T) {
	tests := []struct {
		value, want string
	}{
		{"https://127.0.0.1:6443", ""},
		{"https://kubernetes.example.com", ""},
		{"https://[::1]:6443", ""},
		{"https://rancher.example.com/k8s/clusters/c-1", ""},
		{"HTTPS://Kubernetes.Example.com", ""},
		{"http://127.0.0.1:6443", "must start with https://"},
		{"ftp://127.0.0.1", "must start with https://"},
		{"127.0.0.1:6443", "not a valid URL"},
		{"kubernetes.example.com", "must start with https://"},
		{"not a url", "must start with https://"},
		{"", "must start with https://"},
		{"https://", "has no host"},
		{"https:///path", "has no host"},
		{"https://admin:hunter2@127.0.0.1:6443", "user info"},
		{"https://token@127.0.0.1:6443", "user info"},
		{"https://127.0.0.1:6443?timeout=5s", "query"},
		{"https://127.0.0.1:6443#frag", "fragment"},
		{"https://127.0.0.1:6443/%zz", "not a valid URL"},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			err := validateHTTPSURL("kubernetes_host", tc.value)
			checkValidation(t, err, tc.want)
			if err == nil {
				return
			}
			if !strings.HasPrefix(err.Error(), "kubernetes_host ") {
				t.Errorf("error %q does not name the field", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q echoes a password", err)
			}
		})
	}
}

func TestValidateVaultName(t *testing.T) {
	tests := []struct {
		value, want string
	}{
		{"a", ""},
		{"cluster-a", ""},
		{"Cluster-A", ""},
		{"prod.eu_1-k8s", ""},
		{"0", ""},
		{strings.Repeat("x", maxVaultNameLength), ""},
		{"", "role name is required"},
		{strings.Repeat("x", maxVaultNameLength+1), "at most 128"},
		{strings.Repeat("x", 300), "300 characters"},
		{"a..b", "without '..'"},
		{"..", "invalid"},
		{"-leading", "starting and ending with a letter or digit"},
		{"trailing.", "starting and ending with a letter or digit"},
		{"trailing-", "invalid"},
		{".hidden", "invalid"},
		{"_under", "invalid"},
		{"clüster", "invalid"},
		{"has space", "invalid"},
		{"a/b", "invalid"},
		{"a:b", "invalid"},
		{"a*", "invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			checkValidation(t, validateVaultName("role", tc.value), tc.want)
		})
	}
}

func TestValidateJWTShape(t *testing.T) {
	tests := []struct {
		name, value string
		ok          bool
	}{
		{"requester JWT", testRequesterJWT, true},
		{"issued-style JWT", fakeJWT(map[string]interface{}{"jti": "x"}), true},
		{"unsigned JWT", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", true},
		{"empty", "", false},
		{"one part", "secret-token-value", false},
		{"two parts", "secret.token", false},
		{"four parts", "a.b.c.d", false},
		{"standard base64 with padding", "YQ==.Yg==.Yw==", false},
		{"space inside", "eyJh bGci.eyJz.c2ln", false},
		{"trailing newline", testRequesterJWT + "\n", false},
		{"Bearer prefix", "Bearer " + testRequesterJWT, false},
		{"empty header", ".eyJzdWIiOiJ4In0.c2ln", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateJWTShape(tc.value)
			if tc.ok {
				checkValidation(t, err, "")
				return
			}
			checkValidation(t, err, "does not look like a JWT")
			for _, part := range strings.FieldsFunc(tc.value, func(r rune) bool { return r == '.' || r == ' ' }) {
				if len(part) > 3 && strings.Contains(err.Error(), part) {
					t.Errorf("error %q echoes part of the submitted value (%q)", err, part)
				}
			}
		})
	}
}

func TestValidateProxyURL(t *testing.T) {
	tests := []struct {
		value, want string
	}{
		{"http://proxy.internal:3128", ""},
		{"https://proxy.internal:3128", ""},
		{"socks5://127.0.0.1:1080", ""},
		{"ftp://proxy.internal", "must use http, https or socks5"},
		{"proxy.internal:3128", "must use http, https or socks5"},
		{"", "must use http, https or socks5"},
		{"http://", "has no host"},
		{"http://proxy/%zz", "not a valid URL"},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			err := validateProxyURL(tc.value)
			checkValidation(t, err, tc.want)
			if err != nil && !strings.HasPrefix(err.Error(), "proxy_url ") {
				t.Errorf("error %q does not name the field", err)
			}
		})
	}
}

func TestUnknownFields(t *testing.T) {
	schema := map[string]*framework.FieldSchema{
		"name":            {Type: framework.TypeString},
		"kubernetes_host": {Type: framework.TypeString},
		"ttl":             {Type: framework.TypeDurationSecond},
	}
	tests := []struct {
		name string
		raw  map[string]interface{}
		want []string // phrases; nil means no error
	}{
		{"no fields", map[string]interface{}{}, nil},
		{"known fields", map[string]interface{}{"name": "x", "kubernetes_host": "https://h", "ttl": "1m"}, nil},
		{"one typo", map[string]interface{}{"kubernetes_hots": "https://h"}, []string{"unknown field(s) kubernetes_hots;", "valid fields are kubernetes_host, name, ttl"}},
		{"several, sorted", map[string]interface{}{"zz": 1, "tll": "1m", "ttl": "1m"}, []string{"unknown field(s) tll, zz;"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := unknownFields(&framework.FieldData{Raw: tc.raw, Schema: schema})
			if tc.want == nil {
				checkValidation(t, err, "")
				return
			}
			for _, w := range tc.want {
				checkValidation(t, err, w)
			}
			if strings.Contains(err.Error(), "https://h") {
				t.Errorf("error %q echoes a value", err)
			}
		})
	}
}

func TestHostsEqual(t *testing.T) {
	tests := []struct {
		a, b  string
		equal bool
	}{
		{"https://127.0.0.1:6443", "https://127.0.0.1:6443", true},
		{"https://127.0.0.1:6443", "https://127.0.0.1:6443/", true},
		{"https://127.0.0.1:6443//", "https://127.0.0.1:6443", true},
		{"https://k8s.example.com", "HTTPS://K8S.Example.COM", true},
		{"https://h/prefix", "https://h/prefix/", true},
		{"", "", true},
		{"https://127.0.0.1:6443", "https://127.0.0.1:6444", false},
		{"https://127.0.0.1:6443", "https://10.0.0.1:6443", false},
		{"https://h/prefix", "https://h/other", false},
		{"https://h/prefix", "https://h/PREFIX", false},
		{"https://127.0.0.1:6443", "", false},
		{"", "https://127.0.0.1:6443", false},
		{"https://h", "http://h", false},
	}
	for _, tc := range tests {
		t.Run(tc.a+" vs "+tc.b, func(t *testing.T) {
			if got := hostsEqual(tc.a, tc.b); got != tc.equal {
				t.Errorf("hostsEqual(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.equal)
			}
			if got := hostsEqual(tc.b, tc.a); got != tc.equal {
				t.Errorf("hostsEqual(%q, %q) = %v, want %v (not symmetric)", tc.b, tc.a, got, tc.equal)
			}
		})
	}
}

func TestTokenExpirationSeconds(t *testing.T) {
	tests := []struct {
		ttl  time.Duration
		want int64
	}{
		{0, 600},
		{time.Second, 600},
		{time.Minute, 600},
		{9*time.Minute + 30*time.Second, 600},
		{10 * time.Minute, 630},
		{10*time.Minute + 500*time.Millisecond, 631},
		{15 * time.Minute, 930},
		{time.Hour, 3630},
		{24 * time.Hour, 86430},
	}
	for _, tc := range tests {
		t.Run(tc.ttl.String(), func(t *testing.T) {
			if got := tokenExpirationSeconds(tc.ttl); got != tc.want {
				t.Errorf("tokenExpirationSeconds(%s) = %d, want %d", tc.ttl, got, tc.want)
			}
		})
	}
}

func TestParseTokenClaims(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	header := enc([]byte(`{"alg":"RS256"}`))
	good := fakeJWT(map[string]interface{}{"jti": "5a1b-jti", "exp": 1700000000, "sub": "system:serviceaccount:ns:sa"})

	claims, err := parseTokenClaims(good)
	if err != nil {
		t.Fatalf("good token: %v", err)
	}
	if claims.JTI != "5a1b-jti" || claims.Exp != 1700000000 {
		t.Fatalf("good token: claims %+v", claims)
	}
	if claims, err := parseTokenClaims(header + "." + enc([]byte(`{"sub":"x"}`)) + ".sig"); err != nil || claims.JTI != "" || claims.Exp != 0 {
		t.Fatalf("token without jti/exp: claims %+v, err %v", claims, err)
	}

	tests := []struct {
		name, token, want string
	}{
		{"empty", "", "not a JWT"},
		{"not a JWT", "secret-opaque-token", "not a JWT"},
		{"two parts", header + ".secretpayload", "not a JWT"},
		{"four parts", header + ".secretpayload.sig.extra", "not a JWT"},
		{"bad base64", header + ".secret!payload*.sig", "not base64url"},
		{"padded base64", header + "." + base64.URLEncoding.EncodeToString([]byte(`{"jti":"secretjti1"}`)) + ".sig", "not base64url"},
		{"bad JSON", header + "." + enc([]byte("secret not json")) + ".sig", "not JSON"},
		{"JSON of the wrong type", header + "." + enc([]byte(`{"exp":"secret-soon"}`)) + ".sig", "not JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTokenClaims(tc.token)
			checkValidation(t, err, tc.want)
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q echoes the token", err)
			}
			for _, part := range strings.Split(tc.token, ".") {
				if len(part) > 3 && strings.Contains(err.Error(), part) {
					t.Errorf("error %q echoes part of the token (%q)", err, part)
				}
			}
		})
	}
}
