package backend

import (
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

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

func TestRealClientTLS(t *testing.T) {
	srv := newAPIServer(t)

	t.Run("trusted CA", func(t *testing.T) {
		v, err := realClient(t, srv.URL, []byte(srv.caPEM)).ServerVersion(context.Background())
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
	target := newAPIServer(t)
	redirector := newAPIServer(t, redirecting(target.URL))

	_, err := realClient(t, redirector.URL, []byte(redirector.caPEM)).ServerVersion(context.Background())
	if err == nil {
		t.Error("a redirected request succeeded")
	}
	var hits, sawAuth int
	for _, auth := range target.authorizations() {
		hits++
		if auth != "" {
			sawAuth++
		}
	}
	if hits != 0 || sawAuth != 0 {
		t.Errorf("redirect followed: %d requests reached the other host, %d with Authorization", hits, sawAuth)
	}
}

// API server 429s with Retry-After are retried by client-go, not surfaced.
func TestRealClientRetries429(t *testing.T) {
	srv := newAPIServer(t)
	srv.versionTooMany = 2
	v, err := realClient(t, srv.URL, []byte(srv.caPEM)).ServerVersion(context.Background())
	if err != nil || v != "v1.37.2" {
		t.Fatalf("version = %q, %v", v, err)
	}
	if calls := len(srv.authorizations()); calls != 3 {
		t.Errorf("calls = %d, want 3 (two 429s retried)", calls)
	}
}
