package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"k8s.io/client-go/rest"
)

const (
	otherHost = "https://10.0.0.2:6443"
	otherJWT  = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvdGhlciJ9.b3RoZXItc2lnbmF0dXJl"
)

// twoClusters is a backend whose clients reach one of two independent fake
// API servers, chosen by host, as two real clusters would be.
type twoClusters struct {
	b    *backend
	s    logical.Storage
	a, o *fakeKube // testHost, otherHost
}

func newTwoClusters(t *testing.T) *twoClusters {
	t.Helper()
	b, s, a := newTestBackend(t)
	o := newFakeKube(t)
	b.newKubeAPI = func(cfg *rest.Config) (kubeAPI, error) {
		if cfg.Host == otherHost {
			return o.api(), nil
		}
		return a.api(), nil
	}
	configureCluster(t, b, s)
	configureRole(t, b, s, nil)
	return &twoClusters{b: b, s: s, a: a, o: o}
}

func (tc *twoClusters) repoint(t *testing.T) {
	t.Helper()
	mustOK(t, tc.b, tc.s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host": otherHost, "service_account_jwt": otherJWT,
	})
}

func (tc *twoClusters) revoke(t *testing.T, resp *logical.Response) error {
	t.Helper()
	_, err := tc.b.HandleRequest(context.Background(), revokeRequest(tc.s, resp))
	return err
}

// After the cluster entry is re-pointed, a lease is revoked on the API
// server that issued it, not on the new one (where its Secret would be
// "not found" and the revoke a lie).
func TestRevokeReachesIssuingEndpointAfterRepoint(t *testing.T) {
	tc := newTwoClusters(t)
	first := mustOK(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, nil)
	tc.repoint(t)
	second := mustOK(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, nil)
	if len(tc.a.managedSecrets(t)) != 1 || len(tc.o.managedSecrets(t)) != 1 {
		t.Fatalf("setup: Secrets on the clusters: %d and %d, want one each", len(tc.a.managedSecrets(t)), len(tc.o.managedSecrets(t)))
	}

	if err := tc.revoke(t, first); err != nil {
		t.Fatalf("revoking the first lease: %v", err)
	}
	if left := tc.a.managedSecrets(t); len(left) != 0 {
		t.Errorf("the first lease's Secret survived its revoke: %v", names(left))
	}
	if len(tc.o.managedSecrets(t)) != 1 {
		t.Error("revoking the first lease touched the new cluster")
	}
	if err := tc.revoke(t, second); err != nil {
		t.Fatalf("revoking the second lease: %v", err)
	}
	if left := tc.o.managedSecrets(t); len(left) != 0 {
		t.Errorf("the second lease's Secret survived its revoke: %v", names(left))
	}
}

// Deleting the role and then its cluster leaves the leases revocable.
func TestRevokeAfterRoleAndClusterDeleted(t *testing.T) {
	tc := newTwoClusters(t)
	resp := mustOK(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, nil)
	mustOK(t, tc.b, tc.s, logical.DeleteOperation, "roles/"+testRole, nil)
	mustOK(t, tc.b, tc.s, logical.DeleteOperation, "clusters/"+testCluster, nil)
	tc.b.resetClients() // as after a restart: nothing cached

	if err := tc.revoke(t, resp); err != nil {
		t.Fatalf("revoke after the cluster was deleted: %v", err)
	}
	if left := tc.a.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secret left: %v", names(left))
	}

	// A cluster of the same name created again is another endpoint.
	mustOK(t, tc.b, tc.s, logical.CreateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host": otherHost, "kubernetes_ca_cert": testCAPEM(t), "service_account_jwt": otherJWT,
	})
	configureRole(t, tc.b, tc.s, nil)
	again := mustOK(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, nil)
	if len(tc.o.managedSecrets(t)) != 1 {
		t.Fatal("the re-created cluster did not issue on its own endpoint")
	}
	if err := tc.revoke(t, again); err != nil || len(tc.o.managedSecrets(t)) != 0 {
		t.Fatalf("revoke on the re-created cluster: %v", err)
	}
}

// A lease whose endpoint the plugin no longer knows fails to revoke, loudly,
// and touches nothing on the cluster's current endpoint.
func TestRevokeOfUnknownEndpointFails(t *testing.T) {
	tc := newTwoClusters(t)
	resp := mustOK(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, nil)
	resp.Secret.InternalData["endpoint"] = "forgotten"
	err := tc.revoke(t, resp)
	if err == nil {
		t.Fatal("revoke reported success for a lease it could not reach")
	}
	assertNoSecretIn(t, err.Error(), resp.Data["service_account_token"].(string))
	if len(tc.a.managedSecrets(t)) != 1 {
		t.Error("revoke deleted on an endpoint that did not issue the lease")
	}
}

// A failed issue's WAL entry is rolled back on the endpoint that created
// its objects, after a re-point too.
func TestRollbackReachesIssuingEndpointAfterRepoint(t *testing.T) {
	tc := newTwoClusters(t)
	failing := failSecretDeletes(tc.a)
	tc.a.setTokenErr(errTokenRequestFailed)
	if _, err := request(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, nil); err == nil {
		t.Fatal("issue succeeded despite the TokenRequest failure")
	}
	tc.repoint(t)
	failing.Store(false)
	rollbackNow(t, tc.b, tc.s)
	if left := tc.a.managedSecrets(t); len(left) != 0 {
		t.Errorf("rollback left the Secret on the issuing cluster: %v", names(left))
	}
	if wals := walEntries(t, tc.s); len(wals) != 0 {
		t.Errorf("WAL entries left: %d", len(wals))
	}
}

// The endpoint ID changes with where or how the plugin connects, not with
// the credential alone.
func TestEndpointIDFollowsTheConnection(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	id := func() string {
		cfg, err := getCluster(context.Background(), s, testCluster)
		if err != nil || cfg == nil {
			t.Fatal(err)
		}
		return cfg.EndpointID
	}
	first := id()
	if first == "" {
		t.Fatal("a new cluster has no endpoint ID")
	}
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"service_account_jwt": otherJWT, "qps": 20})
	if id() != first {
		t.Error("a new credential for the same endpoint changed the endpoint ID")
	}
	if recs, _ := listRetiredEndpoints(context.Background(), s, testCluster); len(recs) != 0 {
		t.Errorf("a credential change retired %d endpoints", len(recs))
	}
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"tls_server_name": "kubernetes.internal", "service_account_jwt": otherJWT})
	if id() == first {
		t.Error("a new TLS server name kept the endpoint ID")
	}
	recs, err := listRetiredEndpoints(context.Background(), s, testCluster)
	if err != nil || len(recs) != 1 || recs[0].Config.EndpointID != first || recs[0].Config.JWT != otherJWT {
		t.Fatalf("retired endpoints %v, %v; want the first with its credential", recs, err)
	}
}

// Retired endpoints are forgotten once no lease can need them: a day after
// the later of their retirement and their recorded lease horizon; one from
// before horizons were recorded falls back to the mount's max lease TTL as
// it is when pruning.
func TestRetiredEndpointsPruned(t *testing.T) {
	now := time.Now().UTC()
	const maxLease = 24 * time.Hour // the test mount's
	for _, tc := range []struct {
		name     string
		legacy   bool      // the endpoint predates lease horizons
		horizon  time.Time // zero: none recorded
		keptTill time.Time
	}{
		{name: "no lease issued", keptTill: now.Add(walGiveUpAge)},
		{name: "horizon after retirement", horizon: now.Add(50 * time.Hour), keptTill: now.Add(50*time.Hour + walGiveUpAge)},
		{name: "horizon before retirement", horizon: now.Add(-time.Hour), keptTill: now.Add(walGiveUpAge)},
		{name: "legacy, no horizon", legacy: true, keptTill: now.Add(maxLease + tokenExpirySkew + walGiveUpAge)},
		{name: "legacy, later horizon", legacy: true, horizon: now.Add(50 * time.Hour), keptTill: now.Add(50*time.Hour + walGiveUpAge)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := newConfiguredBackend(t)
			cfg, _ := getCluster(context.Background(), s, testCluster)
			cfg.LeaseHorizonRecorded = !tc.legacy
			if err := retireEndpoint(context.Background(), s, testCluster, cfg, now); err != nil {
				t.Fatal(err)
			}
			if !tc.horizon.IsZero() {
				putHorizon(t, s, cfg.EndpointID, tc.horizon)
			}
			read := readResponseData(t, b, s, "clusters/"+testCluster)["retired_endpoints"].([]map[string]interface{})
			if len(read) != 1 || read[0]["keep_until"] != tc.keptTill.Format(time.RFC3339) {
				t.Errorf("read %v, want keep_until %s", read, tc.keptTill.Format(time.RFC3339))
			}
			for _, at := range []struct {
				at       time.Time
				wantLeft int
			}{{tc.keptTill.Add(-time.Minute), 1}, {tc.keptTill.Add(time.Minute), 0}} {
				if _, err := b.pruneRetiredEndpoints(context.Background(), s, at.at); err != nil {
					t.Fatal(err)
				}
				if recs, _ := listRetiredEndpoints(context.Background(), s, testCluster); len(recs) != at.wantLeft {
					t.Errorf("at +%s: %d retired endpoints left, want %d", at.at.Sub(now).Round(time.Minute), len(recs), at.wantLeft)
				}
			}
			if h, _ := getLeaseHorizon(context.Background(), s, testCluster, cfg.EndpointID); !h.IsZero() {
				t.Error("the lease horizon of the forgotten endpoint was left in storage")
			}
		})
	}
}

func putHorizon(t *testing.T, s logical.Storage, endpointID string, at time.Time) {
	t.Helper()
	entry, err := logical.StorageEntryJSON(leaseHorizonKey(testCluster, endpointID), at)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), entry); err != nil {
		t.Fatal(err)
	}
}

// A lease issued under a long max lease TTL keeps its endpoint, once
// retired, until that lease has expired, even after the mount is tuned
// down: the issue recorded when it expires. Issues inside the recorded
// horizon do not write it again.
func TestRetiredEndpointKeptUntilLeaseHorizon(t *testing.T) {
	tc := newTwoClusters(t)
	mustOK(t, tc.b, tc.s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"ttl": "20h", "max_ttl": "20h"})
	issued := time.Now()
	mustOK(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, nil)
	endpoint := readResponseData(t, tc.b, tc.s, "clusters/"+testCluster)["endpoint_id"].(string)
	horizon, err := getLeaseHorizon(context.Background(), tc.s, testCluster, endpoint)
	if err != nil || horizon.Before(issued.Add(20*time.Hour)) {
		t.Fatalf("recorded horizon %s (%v), want at least the lease's expiry %s", horizon, err, issued.Add(20*time.Hour))
	}
	mustOK(t, tc.b, tc.s, logical.ReadOperation, "creds/"+testRole, map[string]interface{}{"ttl": "19h"})
	if again, _ := getLeaseHorizon(context.Background(), tc.s, testCluster, endpoint); !again.Equal(horizon) {
		t.Errorf("an issue inside the horizon rewrote it: %s -> %s", horizon, again)
	}

	tc.b.System().(*logical.StaticSystemView).MaxLeaseTTLVal = time.Hour
	tc.repoint(t)
	retired := readResponseData(t, tc.b, tc.s, "clusters/"+testCluster)["retired_endpoints"].([]map[string]interface{})
	if want := horizon.Add(walGiveUpAge).Format(time.RFC3339); len(retired) != 1 || retired[0]["keep_until"] != want {
		t.Errorf("retired endpoints %v, want keep_until %s", retired, want)
	}
	for _, at := range []struct {
		name     string
		at       time.Time
		wantLeft int
	}{
		{"past the tuned-down max lease TTL", time.Now().Add(time.Hour + tokenExpirySkew + walGiveUpAge + time.Minute), 1},
		{"before the horizon", horizon.Add(walGiveUpAge - time.Minute), 1},
		{"past the horizon", horizon.Add(walGiveUpAge + time.Minute), 0},
	} {
		if _, err := tc.b.pruneRetiredEndpoints(context.Background(), tc.s, at.at); err != nil {
			t.Fatal(err)
		}
		if recs, _ := listRetiredEndpoints(context.Background(), tc.s, testCluster); len(recs) != at.wantLeft {
			t.Errorf("%s: %d retired endpoints left, want %d", at.name, len(recs), at.wantLeft)
		}
	}
}

// failingStorage fails the operations its predicates pick, by key.
type failingStorage struct {
	logical.Storage
	failPut, failDelete atomic.Pointer[func(key string) bool]
}

func (s *failingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if f := s.failPut.Load(); f != nil && (*f)(e.Key) {
		return errors.New("storage unavailable")
	}
	return s.Storage.Put(ctx, e)
}

func (s *failingStorage) Delete(ctx context.Context, key string) error {
	if f := s.failDelete.Load(); f != nil && (*f)(key) {
		return errors.New("storage unavailable")
	}
	return s.Storage.Delete(ctx, key)
}

func keyPrefix(prefix string) *func(string) bool {
	f := func(key string) bool { return strings.HasPrefix(key, prefix) }
	return &f
}

// A lease whose horizon cannot be recorded is not returned: its objects
// are deleted and no WAL entry is left.
func TestIssueFailsWhenHorizonCannotBeRecorded(t *testing.T) {
	b, inner, fk := newConfiguredBackend(t)
	s := &failingStorage{Storage: inner}
	s.failPut.Store(keyPrefix(leaseHorizonPrefix))
	resp, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("issued a lease whose expiry could not be recorded")
	}
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("the failed issue left Secrets %v", names(left))
	}
	if wals := walEntries(t, s); len(wals) != 0 {
		t.Errorf("%d WAL entries left", len(wals))
	}
	if got := len(fk.tokenRequests()); got != 1 {
		t.Fatalf("%d TokenRequests, want the one whose token died", got)
	}
}

// Retired endpoints are read like clusters: never with their credential.
func TestRetiredEndpointsSealWrapped(t *testing.T) {
	b, _, _ := newTestBackend(t)
	found := false
	for _, p := range b.PathsSpecial.SealWrapStorage {
		found = found || p == retiredEndpointPrefix
	}
	if !found {
		t.Errorf("SealWrapStorage %v does not cover %s", b.PathsSpecial.SealWrapStorage, retiredEndpointPrefix)
	}
}

// A cluster read lists its retired endpoints, never their credential.
func TestClusterReadListsRetiredEndpoints(t *testing.T) {
	tc := newTwoClusters(t)
	before := readResponseData(t, tc.b, tc.s, "clusters/"+testCluster)["endpoint_id"]
	tc.repoint(t)
	got := readResponseData(t, tc.b, tc.s, "clusters/"+testCluster)
	retired, _ := got["retired_endpoints"].([]map[string]interface{})
	if len(retired) != 1 || retired[0]["endpoint_id"] != before || retired[0]["kubernetes_host"] != testHost || got["endpoint_id"] == before {
		t.Fatalf("read %#v; want the old endpoint %v retired", got, before)
	}
	assertNoSecretIn(t, fmt.Sprintf("%#v", got), otherJWT)
}
