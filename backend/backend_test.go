package backend

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/client-go/rest"
)

func TestClientCache(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	issue := func() { mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil) }

	issue()
	issue()
	if n := fk.built.Load(); n != 1 {
		t.Fatalf("clients built for two issues = %d, want 1 (cached)", n)
	}
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"qps": 42})
	issue()
	if n := fk.built.Load(); n != 2 {
		t.Fatalf("clients built after a cluster write = %d, want 2", n)
	}
	if qps := fk.lastConfig.Load().QPS; qps != 42 {
		t.Errorf("rebuilt client has qps %v, want 42", qps)
	}

	b.Invalidate(context.Background(), "roles/"+testRole)
	issue()
	if n := fk.built.Load(); n != 2 {
		t.Errorf("a role change rebuilt the client (%d builds)", n)
	}
	b.Invalidate(context.Background(), clusterStoragePrefix+testCluster)
	issue()
	if n := fk.built.Load(); n != 3 {
		t.Errorf("clients built after Invalidate = %d, want 3", n)
	}
}

func TestClientCacheConcurrentFirstUse(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.client(context.Background(), s, testCluster); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := fk.built.Load(); n != 1 {
		t.Errorf("16 concurrent first uses built %d clients, want 1", n)
	}
}

func TestRestConfig(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	if _, err := b.client(context.Background(), s, testCluster); err != nil {
		t.Fatal(err)
	}
	cfg := fk.lastConfig.Load()
	switch {
	case cfg.Host != testHost:
		t.Errorf("host = %s", cfg.Host)
	case cfg.Insecure:
		t.Error("TLS verification is off")
	case string(cfg.CAData) != testCAPEM(t):
		t.Error("CA not passed to the client")
	case cfg.BearerToken != testRequesterJWT || cfg.BearerTokenFile != "":
		t.Error("client does not use the configured JWT")
	case cfg.QPS != defaultQPS || cfg.Burst != defaultBurst:
		t.Errorf("qps/burst = %v/%v, want the defaults %v/%v", cfg.QPS, cfg.Burst, defaultQPS, defaultBurst)
	case cfg.Timeout != defaultRequestTimeout:
		t.Errorf("timeout = %s", cfg.Timeout)
	case !strings.HasPrefix(cfg.UserAgent, "vault-plugin-scanner/"):
		t.Errorf("user agent = %s", cfg.UserAgent)
	}
}

func TestInClusterMode(t *testing.T) {
	dir := t.TempDir()
	tokenPath, caPath := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(tokenPath, []byte(testRequesterJWT), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caPath, []byte(testCAPEM(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

	b, s, fk := newTestBackend(t)
	b.inCluster = inClusterEnv{TokenPath: tokenPath, CAPath: caPath, Getenv: func(k string) string { return env[k] }}
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{})
	configureRole(t, b, s, nil)
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)

	cfg := fk.lastConfig.Load()
	if cfg.Host != "https://10.96.0.1:443" || cfg.BearerTokenFile != tokenPath || cfg.BearerToken != "" {
		t.Errorf("in-cluster client: host %s, token file %q", cfg.Host, cfg.BearerTokenFile)
	}
	if resp.Data["kubernetes_host"] != "https://10.96.0.1:443" || resp.Data["kubernetes_ca_cert"] != testCAPEM(t) {
		t.Errorf("kubeconfig endpoint = %v", resp.Data["kubernetes_host"])
	}

	// Outside a pod the same cluster fails with a clear error.
	delete(env, "KUBERNETES_SERVICE_HOST")
	b.resetClients()
	mustBadRequest(t, b, s, logical.ReadOperation, "creds/"+testRole, nil, "KUBERNETES_SERVICE_HOST")
}

// No token, not even the plugin's own, may appear in the plugin's logs.
func TestLogsCarryNoToken(t *testing.T) {
	var logs bytes.Buffer
	fk := newFakeKube(t)
	config := logical.TestBackendConfig()
	config.StorageView = &logical.InmemStorage{}
	config.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: &logs})
	config.System = &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
	b := newBackend("v0.0.0-test")
	b.newKubeAPI = func(*rest.Config) (kubeAPI, error) { return fk.api(), nil }
	if err := b.Setup(context.Background(), config); err != nil {
		t.Fatal(err)
	}
	s := config.StorageView
	configureCluster(t, b, s)
	configureRole(t, b, s, nil)

	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	token := resp.Data["service_account_token"].(string)
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
		t.Fatal(err)
	}
	fk.setTokenErr(context.DeadlineExceeded)
	_, issueErr := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)

	for _, want := range []string{"issued credential", "revoked credential", resp.Data["credential_id"].(string)} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	assertNoSecretIn(t, logs.String(), token)
	assertNoSecretIn(t, issueErr.Error(), token)
	for _, w := range resp.Warnings {
		assertNoSecretIn(t, w, token)
	}
}
