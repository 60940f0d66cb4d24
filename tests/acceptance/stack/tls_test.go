package stack

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

func TestServingCertVerifiesForLoopbackOnly(t *testing.T) {
	c, err := newServingCert(t.TempDir(), "vault")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1", true},
		{"localhost", true},
		{"10.0.0.1", false},
		{"vault.example.com", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: c.CertPool})
			if (err == nil) != tc.ok {
				t.Fatalf("verify for %s: %v, want ok=%v", tc.host, err, tc.ok)
			}
		})
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: x509.NewCertPool()}); err == nil {
		t.Fatal("verified without its CA")
	}
}
