package backend

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
	body := pemBody(key)
	pkcs8 := strings.ReplaceAll(key, "EC PRIVATE KEY", "PRIVATE KEY")
	publicKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("not really a key")}))
	junkCert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))
	withHeaders := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: mustDER(t, ca)}))
	// A key in armour that pem.Decode skips: it finds the next block.
	keyMismatchedEnd := "-----BEGIN EC PRIVATE KEY-----\n" + body + "\n-----END RSA PRIVATE KEY-----\n"
	renamedKey := "-----BEGIN STUFF-----\n" + body + "\n-----END OTHER STUFF-----\n"
	keyAsCertMismatchedEnd := "-----BEGIN CERTIFICATE-----\n" + body + "\n-----END STUFF-----\n"
	keyAsType := "-----BEGIN " + body[:40] + "-----\n" + body + "\n-----END " + body[:40] + "-----\n"

	tests := []struct {
		name, value, want string
	}{
		{"one certificate", ca, ""},
		{"bundle of two", ca + ca, ""},
		{"blank lines around and between", "\n\n  " + ca + "\n\t\n" + ca + "\n \n", ""},
		{"CRLF line endings", strings.ReplaceAll(ca+ca, "\n", "\r\n"), ""},
		{"no final newline", strings.TrimSpace(ca), ""},
		{"empty", "", "at least one certificate"},
		{"whitespace", " \n\t", "at least one certificate"},
		{"not PEM", "this is not a certificate", "at least one certificate"},
		{"base64 without armour", base64.StdEncoding.EncodeToString([]byte("x")), "at least one certificate"},
		{"EC private key", key, "private key"},
		{"PKCS#8 private key", pkcs8, "private key"},
		{"RSA private key", strings.ReplaceAll(key, "EC PRIVATE KEY", "RSA PRIVATE KEY"), "private key"},
		{"certificate followed by its key", ca + key, "private key"},
		{"key with a mismatched END line before a certificate", keyMismatchedEnd + ca, "private key"},
		{"key with a mismatched END line after a certificate", ca + keyMismatchedEnd, "private key"},
		{"renamed key block before a certificate", renamedKey + ca, "another type"},
		{"key in CERTIFICATE armour with a mismatched END line", keyAsCertMismatchedEnd + ca, "malformed CERTIFICATE block"},
		{"key as the block type", keyAsType + ca, "another type"},
		{"public key", publicKey, `type "PUBLIC KEY"`},
		{"certificate then public key", ca + publicKey, `type "PUBLIC KEY"`},
		{"certificate block that is not DER", junkCert, "does not parse"},
		{"certificate with PEM headers", withHeaders, "PEM headers"},
		{"BEGIN line without END", strings.TrimSuffix(ca, "-----END CERTIFICATE-----\n"), "without its -----END CERTIFICATE----- line"},
		{"trailing garbage", ca + "garbage", "trailing data"},
		{"openssl text before the block", "subject=CN = test-ca\n" + ca, "data outside its PEM blocks"},
		{"text between blocks", ca + "issuer=CN = test-ca\n" + ca, "data outside its PEM blocks"},
		{"key body between blocks", ca + body + "\n" + ca, "data outside its PEM blocks"},
		{"text after the END line", strings.Replace(ca, "END CERTIFICATE-----\n", "END CERTIFICATE-----"+body[:10]+"\n", 1) + ca, "trailing data"},
		{"BEGIN line with text after it", strings.Replace(ca, "-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE----- "+body[:10], 1), "another type"},
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
			// Neither a pasted key nor any other part of the input is echoed.
			for i := 0; i+8 <= len(body); i += 4 {
				if strings.Contains(err.Error(), body[i:i+8]) {
					t.Fatalf("error %q echoes key material", err)
				}
			}
		})
	}
}

// mustDER is the DER of the first block of a PEM text.
func mustDER(t *testing.T, s string) []byte {
	t.Helper()
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		t.Fatal("no PEM block")
	}
	return block.Bytes
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
		{"https://bücher.example/k8s", ""},
		{"http://127.0.0.1:6443", "plain HTTP is refused"},
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
		// None of these may quote the password.
		{"https://admin:hunter2@[bad", "not a valid URL"},
		{"https://admin:hunter2@host:port", "not a valid URL"},
		{"https://admin:hunter2@/path", "has no host"},
		{"https:admin:hunter2@host", "has no host"},
		{"hunter2://host", "must start with https://"},
		// url.Parse lets C1 controls and invalid UTF-8 through.
		{"https://k8s.example.com\u0085", "control characters"},
		{"https://k8s.example.com/\u009f", "control characters"},
		{"https://k8s.example.com/\x85", "control characters"},
		{"https://k8s.example.com/\xff", "control characters"},
		{"https://k8s.example.com\x7f", "control characters"},
		{"https://k8s.example.com\n", "control characters"},
		{"https://k8s.example.com/\t", "control characters"},
		{"https://k8s.example.com\x00", "control characters"},
	}
	for _, field := range []string{"kubernetes_host", "kubeconfig_host"} {
		for _, tc := range tests {
			t.Run(field+"/"+tc.value, func(t *testing.T) {
				err := validateHTTPSURL(field, tc.value)
				checkValidation(t, err, tc.want)
				if err == nil {
					return
				}
				if !strings.HasPrefix(err.Error(), field+" ") {
					t.Errorf("error %q does not name the field", err)
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "example.com") {
					t.Errorf("error %q echoes the value", err)
				}
			})
		}
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
		{"http://user:s3cret@proxy.internal:3128", ""},
		{"ftp://proxy.internal", "must use http, https or socks5"},
		{"proxy.internal:3128", "must use http, https or socks5"},
		{"", "must use http, https or socks5"},
		{"http://", "has no host"},
		{"http://proxy/%zz", "not a valid URL"},
		// None of these may quote the password, not even redacted.
		{"http://user:s3cret@[bad", "not a valid URL (expected scheme://[user:password@]host:port)"},
		{"http://user:s3cret@proxy:port", "not a valid URL"},
		{"http://user:s3cret@proxy/%zz", "not a valid URL"},
		{"socks5://user:s3cret@pro xy:1080", "not a valid URL"},
		{"http://user:s3cret@", "has no host"},
		{"http:user:s3cret@proxy:3128", "has no host"},
		{"ftp://user:s3cret@proxy.internal", "must use http, https or socks5"},
		{"user:s3cret@proxy.internal:3128", "must use http, https or socks5"},
		{"s3cret:x@proxy.internal:3128", "must use http, https or socks5"},
		{"http://user:s3cret@proxy\u0085:3128", "control characters"},
		{"http://user:s3cret\x85@proxy:3128", "control characters"},
		{"http://user:s3cret@proxy:3128\r\n", "control characters"},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			err := validateProxyURL(tc.value)
			checkValidation(t, err, tc.want)
			if err == nil {
				return
			}
			if !strings.HasPrefix(err.Error(), "proxy_url ") {
				t.Errorf("error %q does not name the field", err)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "proxy.internal") {
				t.Errorf("error %q echoes the value", err)
			}
		})
	}
}

func TestValidateDNSName(t *testing.T) {
	tests := []struct {
		value, want string
	}{
		{"kubernetes.default.svc", ""},
		{"API.Example.com", ""},
		{"kubernetes default", "is not a valid DNS name"},
		{"api\u0085.local", "control characters"},
		{"api.local\n", "control characters"},
		{"api.\xff.local", "control characters"},
		{strings.Repeat("a", 5000), "is not a valid DNS name"},
	}
	for _, tc := range tests {
		t.Run(tc.value[:min(len(tc.value), 30)], func(t *testing.T) {
			err := validateDNSName(tc.value)
			checkValidation(t, err, tc.want)
			if err != nil && strings.Contains(err.Error(), strings.Repeat("a", clipBytes+1)) {
				t.Errorf("error %q quotes more than %d bytes", err, clipBytes)
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
		{"odd name quoted", map[string]interface{}{"a b\n": 1}, []string{`unknown field(s) "a b\n";`}},
		{"long name clipped", map[string]interface{}{strings.Repeat("x", 10000): 1}, []string{`unknown field(s) "` + strings.Repeat("x", 64) + `…";`}},
		{"many names capped", manyFields(200), []string{"unknown field(s) f000, f001, f002, f003, f004, and 195 more;"}},
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
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func manyFields(n int) map[string]interface{} {
	m := map[string]interface{}{}
	for i := range n {
		m[fmt.Sprintf("f%03d", i)] = strings.Repeat("v", 1000)
	}
	return m
}

func TestClip(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "team-a", "team-a"},
		{"exactly 64 bytes", strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{"65 bytes", strings.Repeat("a", 65), strings.Repeat("a", 64) + "…"},
		{"huge", strings.Repeat("a", 1<<20), strings.Repeat("a", 64) + "…"},
		// 21 three-byte runes are 63 bytes; the 22nd does not fit whole.
		{"multi-byte runes not split", strings.Repeat("€", 30), strings.Repeat("€", 21) + "…"},
		{"invalid UTF-8 replaced", "a\xffb", "a\uFFFDb"},
		{"control characters kept for %q to escape", "a\x00\n", "a\x00\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := clip(tc.in)
			if got != tc.want {
				t.Fatalf("clip = %q, want %q", got, tc.want)
			}
			if !utf8.ValidString(got) || len(got) > clipBytes+len("…") {
				t.Fatalf("clip = %q: %d bytes, valid UTF-8 %v", got, len(got), utf8.ValidString(got))
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

// FuzzCACertPEM: an accepted bundle is its certificates and whitespace,
// nothing else; a refusal never quotes the input.
func FuzzCACertPEM(f *testing.F) {
	ca := testCAPEM(f)
	key := testPrivateKeyPEM(f)
	f.Add(ca)
	f.Add(ca + ca)
	f.Add("x\n" + ca)
	f.Add(ca + key)
	f.Add("-----BEGIN EC PRIVATE KEY-----\n" + pemBody(key) + "\n-----END RSA PRIVATE KEY-----\n" + ca)
	f.Fuzz(func(t *testing.T, value string) {
		err := validateCACertPEM("kubernetes_ca_cert", value)
		if err != nil {
			if len(err.Error()) > 200 {
				t.Fatalf("error is %d bytes long", len(err.Error()))
			}
			return
		}
		var reencoded strings.Builder
		for rest := []byte(value); ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if _, err := x509.ParseCertificate(block.Bytes); block.Type != "CERTIFICATE" || err != nil {
				t.Fatalf("accepted a %q block (%v)", block.Type, err)
			}
			reencoded.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}))
		}
		noSpace := func(s string) string { return strings.Join(strings.Fields(s), "") }
		if noSpace(value) != noSpace(reencoded.String()) {
			t.Fatalf("accepted a bundle with more than certificates and whitespace:\n%q", value)
		}
	})
}

// hostsEqual is whether two kubernetes_host values name the same endpoint.
func hostsEqual(a, b string) bool { return normalizeHost(a) == normalizeHost(b) }
