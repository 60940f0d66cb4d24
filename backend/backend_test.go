package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

const (
	testCluster   = "cluster-a"
	testRole      = "cluster-a"
	testSA        = "scanner-sa"
	testNamespace = "scanner-namespace"
	testHost      = "https://127.0.0.1:6443"
	// testRequesterJWT is the plugin's own credential in tests; no output may contain it.
	testRequesterJWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXF1ZXN0ZXIifQ.c2lnbmF0dXJlLXJlcXVlc3Rlcg"
	// testRequesterUser is whom testRequesterJWT authenticates as.
	testRequesterUser = "requester"
)

// newTestBackend returns a backend whose clients talk to a new fake API
// server (newFakeKube with opts).
func newTestBackend(t testing.TB, opts ...fakeKubeOption) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	return newTestBackendLogging(t, nil, opts...)
}

// newTestBackendLogging is newTestBackend with the given logger (nil: the
// SDK's test logger, trace level to stderr).
func newTestBackendLogging(t testing.TB, logger hclog.Logger, opts ...fakeKubeOption) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	fk := newFakeKube(t, opts...)
	config := logical.TestBackendConfig()
	if logger != nil {
		config.Logger = logger
	}
	config.StorageView = &logical.InmemStorage{}
	config.System = &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
	b := newBackend("v0.0.0-test")
	b.newKubeAPI = fk.factory()
	b.issuerKeyWarmUp = 0 // tests that want it set it
	if err := b.Setup(context.Background(), config); err != nil {
		t.Fatal(err)
	}
	return b, config.StorageView, fk
}

// newConfiguredBackend has cluster-a and role cluster-a written.
func newConfiguredBackend(t testing.TB) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	b, s, fk := newTestBackend(t)
	configureCluster(t, b, s)
	configureRole(t, b, s, nil)
	return b, s, fk
}

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

// Storage written by the previous release (testdata/storage: cluster and
// role entries, tidy/config, a lease's internal data and a WAL entry, as
// that version encoded them) reads back, issues, revokes and rolls back.
func TestStorageFromPreviousVersion(t *testing.T) {
	b, s, fk := newTestBackend(t)
	ctx := context.Background()
	fixture := func(name string) []byte {
		raw, err := os.ReadFile(filepath.Join("testdata", "storage", name))
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	for _, key := range []string{"clusters/cluster-a", "roles/scanner", "roles/ephemeral", "config/tidy"} {
		if err := s.Put(ctx, &logical.StorageEntry{Key: key, Value: fixture(strings.ReplaceAll(key, "/", "__") + ".json")}); err != nil {
			t.Fatal(err)
		}
	}

	cluster := mustOK(t, b, s, logical.ReadOperation, "clusters/cluster-a", nil)
	if cluster.Data["endpoint_id"] != "fixtureendpoint1" || cluster.Data["service_account_jwt_set"] != true || cluster.Data["qps"] != float32(50) {
		t.Errorf("cluster read back as %v", cluster.Data)
	}
	role := mustOK(t, b, s, logical.ReadOperation, "roles/scanner", nil)
	if role.Data["ttl"] != int64(900) || role.Data["service_account_name"] != testSA || role.Data["extra_labels"].(map[string]string)["team"] != "a" {
		t.Errorf("role read back as %v", role.Data)
	}
	tidy := mustOK(t, b, s, logical.ReadOperation, "tidy/config", nil)
	if tidy.Data["interval"] != int64(3600) {
		t.Errorf("tidy/config read back as %v", tidy.Data)
	}
	mustOK(t, b, s, logical.ReadOperation, "creds/scanner", nil)
	mustOK(t, b, s, logical.ReadOperation, "creds/ephemeral", nil)

	// A lease and an unfinished issue of the previous version, on the
	// endpoint the fixture names.
	secrets := fk.clientset.CoreV1().Secrets(testNamespace)
	for name, uid := range map[string]string{"vault-scanner-fixture0000001": "fixture-secret-uid", "vault-scanner-fixture0000002": "fixture-wal-uid"} {
		if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var internal map[string]interface{}
	if err := json.Unmarshal(fixture("lease_internal_data.json"), &internal); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HandleRequest(ctx, &logical.Request{Operation: logical.RevokeOperation, Storage: s, Secret: &logical.Secret{InternalData: internal}}); err != nil {
		t.Fatalf("revoking the previous version's lease: %v", err)
	}
	var wal map[string]interface{}
	if err := json.Unmarshal(fixture("wal_lease_objects.json"), &wal); err != nil {
		t.Fatal(err)
	}
	if _, err := framework.PutWAL(ctx, s, walObjectsKind, wal); err != nil {
		t.Fatal(err)
	}
	rollbackNow(t, b, s)
	for _, name := range []string{"vault-scanner-fixture0000001", "vault-scanner-fixture0000002"} {
		if _, err := secrets.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s: %v, want it deleted", name, err)
		}
	}
}
