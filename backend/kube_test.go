package backend

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"
)

// tlsServerCA returns the PEM of the certificate an httptest TLS server uses.
func tlsServerCA(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

func realClient(t *testing.T, host string, ca []byte) kubeAPI {
	t.Helper()
	api, err := newClientsetAPI(&rest.Config{
		Host: host, BearerToken: testRequesterJWT, QPS: 100, Burst: 100, Timeout: defaultRequestTimeout,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
	})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

func versionHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"gitVersion": "v1.37.2"})
}

func TestRealClientTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(versionHandler))
	defer srv.Close()

	t.Run("trusted CA", func(t *testing.T) {
		v, err := realClient(t, srv.URL, tlsServerCA(srv)).ServerVersion(context.Background())
		if err != nil || v != "v1.37.2" {
			t.Fatalf("version = %q, %v", v, err)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		_, err := realClient(t, srv.URL, []byte(testCAPEM(t))).ServerVersion(context.Background())
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("want a certificate error, got %v", err)
		}
	})
	t.Run("insecure refused", func(t *testing.T) {
		_, err := newClientsetAPI(&rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
		if err == nil {
			t.Fatal("a client without TLS verification was built")
		}
	})
	t.Run("http refused", func(t *testing.T) {
		_, err := newClientsetAPI(&rest.Config{Host: "http://127.0.0.1:8080"})
		if err == nil {
			t.Fatal("a plain-HTTP client was built")
		}
	})
}

// A redirect must never carry the plugin's credential to another host.
func TestRealClientDoesNotFollowRedirects(t *testing.T) {
	var sawAuth, hits atomic.Int32
	target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "" {
			sawAuth.Add(1)
		}
		versionHandler(w, r)
	}))
	defer target.Close()
	redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	_, err := realClient(t, redirector.URL, tlsServerCA(redirector)).ServerVersion(context.Background())
	if err == nil {
		t.Error("a redirected request succeeded")
	}
	if hits.Load() != 0 || sawAuth.Load() != 0 {
		t.Errorf("redirect followed: %d requests reached the other host, %d with Authorization", hits.Load(), sawAuth.Load())
	}
}

// API server 429s with Retry-After are retried by client-go, not surfaced.
func TestRealClientRetries429(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		versionHandler(w, r)
	}))
	defer srv.Close()
	v, err := realClient(t, srv.URL, tlsServerCA(srv)).ServerVersion(context.Background())
	if err != nil || v != "v1.37.2" {
		t.Fatalf("version = %q, %v", v, err)
	}
	if calls.Load() != 3 {
		t.Errorf("calls = %d, want 3 (two 429s retried)", calls.Load())
	}
}
