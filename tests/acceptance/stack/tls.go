package stack

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// ServingCert is a CA of its own and a serving certificate it signed for
// 127.0.0.1 and localhost, as PEM files in one directory: for a server
// that something other than the tests must verify (Vault's TLS listener,
// which the API server reaches as a token issuer).
type ServingCert struct {
	CAPEM    []byte
	CAFile   string
	CertFile string
	KeyFile  string
	CertPool *x509.CertPool
}

func newServingCert(dir, commonName string) (*ServingCert, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	srv, err := newServingPKI(commonName+"-test-ca", commonName, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	c := &ServingCert{
		CAPEM:    srv.caPEM,
		CAFile:   filepath.Join(dir, "ca.crt"),
		CertFile: filepath.Join(dir, "server.crt"),
		KeyFile:  filepath.Join(dir, "server.key"),
		CertPool: x509.NewCertPool(),
	}
	c.CertPool.AddCert(srv.caCert)
	files := map[string][]byte{c.CAFile: srv.caPEM, c.CertFile: srv.certPEM, c.KeyFile: srv.keyPEM}
	for path, data := range files {
		if err := WriteFile0600(path, data); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// HTTPSClient returns a client for Vault's TLS listener that trusts only
// its CA and sends no Vault token: what an API server fetching the issuer's
// discovery document and keys has.
func (v *Vault) HTTPSClient() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: v.TLS.CertPool, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
	}
}
