package backend

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"
)

func validateNamespaceName(field, value string) error {
	if errs := validation.IsDNS1123Label(value); len(errs) > 0 {
		return fmt.Errorf("%s %q is not a valid Kubernetes namespace name: %s", field, clip(value), strings.Join(errs, "; "))
	}
	return nil
}

func validateServiceAccountName(field, value string) error {
	if errs := validation.IsDNS1123Subdomain(value); len(errs) > 0 {
		return fmt.Errorf("%s %q is not a valid Kubernetes service account name: %s", field, clip(value), strings.Join(errs, "; "))
	}
	return nil
}

// validateHTTPSURL accepts only https URLs with a host, so neither the
// plugin's credential nor a user's token is ever sent in clear text. No
// message quotes the value: it may carry a password.
func validateHTTPSURL(field, value string) error {
	if err := refuseControlChars(field, value); err != nil {
		return err
	}
	u, err := url.Parse(value)
	if err != nil {
		// url.Parse's error quotes the whole URL.
		return fmt.Errorf("%s is not a valid URL (expected https://host[:port][/path])", field)
	}
	if u.Scheme != "https" {
		if u.Scheme == "http" {
			return fmt.Errorf("%s must start with https://; plain HTTP is refused", field)
		}
		return fmt.Errorf("%s must start with https:// (expected https://host[:port][/path])", field)
	}
	if u.Host == "" {
		return fmt.Errorf("%s has no host (expected https://host[:port][/path])", field)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s must not carry user info, a query or a fragment", field)
	}
	return nil
}

// validateProxyURL never quotes the value, not even redacted: a URL that
// does not parse cannot be redacted reliably.
func validateProxyURL(value string) error {
	if err := refuseControlChars("proxy_url", value); err != nil {
		return err
	}
	u, err := url.Parse(value)
	if err != nil {
		return fmt.Errorf("proxy_url is not a valid URL (expected scheme://[user:password@]host:port)")
	}
	switch u.Scheme {
	case "http", "https", "socks5":
	default:
		return fmt.Errorf("proxy_url must use http, https or socks5 (expected scheme://[user:password@]host:port)")
	}
	if u.Host == "" {
		return fmt.Errorf("proxy_url has no host (expected scheme://[user:password@]host:port)")
	}
	return nil
}

// refuseControlChars: url.Parse lets C1 controls (U+0080-U+009F) and
// invalid UTF-8 through, and the kubeconfig built from the URL later fails,
// after a token was issued.
func refuseControlChars(field, value string) error {
	if !utf8.ValidString(value) || strings.ContainsFunc(value, unicode.IsControl) {
		return fmt.Errorf("%s must be valid UTF-8 without control characters", field)
	}
	return nil
}

// redactedURL hides a password in a URL (a proxy's credentials) for reads.
func redactedURL(value string) string {
	u, err := url.Parse(value)
	if err != nil {
		return ""
	}
	return u.Redacted()
}

// validateCACertPEM requires a bundle of CERTIFICATE blocks and nothing
// else. encoding/pem alone is too lenient: Decode skips a malformed block
// (a key with a mismatched END line, say) and returns the next one, so each
// block is cut out and decoded on its own. No message quotes the input: it
// may be key material.
func validateCACertPEM(field, value string) error {
	if strings.Contains(value, "PRIVATE KEY-----") {
		return fmt.Errorf("%s contains a private key; paste the CA certificate (-----BEGIN CERTIFICATE-----) instead and keep the key secret", field)
	}
	if !strings.Contains(value, pemBegin) {
		return fmt.Errorf("%s must be a PEM bundle with at least one certificate (-----BEGIN CERTIFICATE-----)", field)
	}
	rest := strings.TrimLeft(value, pemSpace)
	for rest != "" {
		if !strings.HasPrefix(rest, pemBegin) {
			return fmt.Errorf("%s has data outside its PEM blocks (trailing data, or text such as openssl's subject= lines); send only -----BEGIN CERTIFICATE----- blocks", field)
		}
		line, _, _ := strings.Cut(rest, "\n")
		line = strings.TrimRight(line, pemSpace)
		if typ, ok := strings.CutSuffix(strings.TrimPrefix(line, pemBegin), "-----"); !ok || typ != "CERTIFICATE" {
			return fmt.Errorf("%s contains a PEM block of %s; only CERTIFICATE blocks are accepted", field, describePEMType(typ))
		}
		end := strings.Index(rest, pemCertEnd)
		if end < 0 {
			return fmt.Errorf("%s contains a CERTIFICATE block without its -----END CERTIFICATE----- line", field)
		}
		text := rest[:end+len(pemCertEnd)]
		rest = rest[len(text):]
		block, tail := pem.Decode([]byte(text))
		switch {
		case strings.Count(text, pemBegin) != 1, block == nil, len(tail) != 0, block.Type != "CERTIFICATE":
			return fmt.Errorf("%s contains a malformed CERTIFICATE block", field)
		case len(block.Headers) != 0:
			return fmt.Errorf("%s contains a CERTIFICATE block with PEM headers; a certificate has none", field)
		case rest != "" && !strings.ContainsRune(pemSpace, rune(rest[0])):
			return fmt.Errorf("%s has trailing data that is not PEM after an -----END CERTIFICATE----- line", field)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			// x509's error is left out: some quote the certificate's content.
			return fmt.Errorf("%s contains a certificate that does not parse as X.509", field)
		}
		rest = strings.TrimLeft(rest, pemSpace)
	}
	return nil
}

const (
	pemBegin   = "-----BEGIN "
	pemCertEnd = "-----END CERTIFICATE-----"
	pemSpace   = " \t\r\n"
)

// describePEMType names a PEM block type for an error, quoting it only when
// it is a well-known type: the armour line is input like the rest.
func describePEMType(typ string) string {
	switch typ {
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST", "X509 CRL", "TRUSTED CERTIFICATE", "PKCS7", "EC PARAMETERS", "DH PARAMETERS":
		return fmt.Sprintf("type %q", typ)
	}
	return "another type, or a malformed BEGIN line"
}

// validateJWTShape checks the three dot-separated parts without echoing the
// value, so a typo never puts the credential into an error message.
var jwtShape = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$`)

func validateJWTShape(value string) error {
	if !jwtShape.MatchString(value) {
		return fmt.Errorf("service_account_jwt does not look like a JWT (three base64url parts separated by dots)")
	}
	return nil
}

// clipBytes is how much of a caller's value an error may quote.
const clipBytes = 64

// clip cuts s to at most clipBytes bytes of valid UTF-8 (invalid bytes become
// U+FFFD) and marks a cut with "…", so an error quoting caller input (with
// %q) stays short whatever was sent.
func clip(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if b.Len()+utf8.RuneLen(r) > clipBytes {
			b.WriteString("…")
			break
		}
		b.WriteRune(r) // RuneError for an invalid byte: valid UTF-8 out
		i += size
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func validateDNSName(value string) error {
	if err := refuseControlChars("tls_server_name", value); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Subdomain(strings.ToLower(value)); len(errs) > 0 {
		return fmt.Errorf("tls_server_name %q is not a valid DNS name: %s", clip(value), strings.Join(errs, "; "))
	}
	return nil
}
