package backend

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// newAudienceBackend is newConfiguredBackend with the role limited to the
// audiences vault and api.
func newAudienceBackend(t *testing.T) (*backend, logical.Storage, *fakeKube) {
	t.Helper()
	b, s, fk := newConfiguredBackend(t)
	mustOK(t, b, s, logical.UpdateOperation, "roles/"+testRole, map[string]interface{}{"audiences": "vault,api"})
	return b, s, fk
}

func TestCredsBadInput(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		data  map[string]interface{}
		setup func(t *testing.T, b *backend, s logical.Storage)
		want  string
	}{
		{name: "unknown role", path: "creds/no-such-role", want: `role "no-such-role" does not exist`},
		{name: "invalid role name", path: "creds/a..b", want: "role name"},
		{name: "negative ttl", data: map[string]interface{}{"ttl": "-5m"}, want: `field "ttl": cannot provide negative value`},
		{name: "negative ttl in seconds", data: map[string]interface{}{"ttl": "-1"}, want: `field "ttl"`},
		{name: "garbage ttl", data: map[string]interface{}{"ttl": "abc"}, want: `field "ttl"`},
		{name: "overflowing ttl", data: map[string]interface{}{"ttl": "10000000000000h"}, want: `field "ttl"`},
		{name: "audience outside the role's", data: map[string]interface{}{"audiences": "other"}, want: `audience "other" is not allowed by role "cluster-a"`},
		{name: "one audience outside the role's", data: map[string]interface{}{"audiences": []string{"vault", "https://kubernetes.default.svc"}}, want: `audience "https://kubernetes.default.svc" is not allowed`},
		{name: "duplicate audiences", data: map[string]interface{}{"audiences": "vault,vault"}, want: `audience "vault" is listed twice`},
		{name: "empty audience", data: map[string]interface{}{"audiences": "vault,,api"}, want: "must not contain an empty value"},
		{name: "unknown field", data: map[string]interface{}{"tll": "5m"}, want: "unknown field(s) tll"},
		{name: "unknown field among known", data: map[string]interface{}{"ttl": "5m", "namespace": "kube-system"}, want: "unknown field(s) namespace"},
		{
			name: "role's cluster missing from storage",
			setup: func(t *testing.T, b *backend, s logical.Storage) {
				if err := s.Delete(context.Background(), clusterStoragePrefix+testCluster); err != nil {
					t.Fatal(err)
				}
				b.dropCachedClient(testCluster)
			},
			want: `uses cluster "cluster-a", which is not configured`,
		},
	}
	for _, tc := range tests {
		for _, op := range []logical.Operation{logical.ReadOperation, logical.UpdateOperation} {
			t.Run(string(op)+"/"+tc.name, func(t *testing.T) {
				b, s, fk := newAudienceBackend(t)
				if tc.setup != nil {
					tc.setup(t, b, s)
				}
				path := tc.path
				if path == "" {
					path = "creds/" + testRole
				}
				state := recordState(t, b, s, fk, "roles/"+testRole, "clusters/"+testCluster)
				mustBadRequest(t, b, s, op, path, tc.data, tc.want)
				state.check(t)
			})
		}
	}
}

// TestCredsBadInputControl shows the bad-input checks above can fail: the
// same setup with a valid request creates a Secret and a TokenRequest.
func TestCredsBadInputControl(t *testing.T) {
	for _, data := range []map[string]interface{}{nil, {"ttl": "5m", "audiences": "api"}} {
		b, s, fk := newAudienceBackend(t)
		before := storageSnapshot(t, s)
		mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, data)
		if n := len(fk.managedSecrets(t)); n != 1 {
			t.Fatalf("%d managed Secrets after a valid request, want 1", n)
		}
		if n := len(fk.tokenRequests()); n != 1 {
			t.Fatalf("%d TokenRequests after a valid request, want 1", n)
		}
		if got := fk.tokenRequests()[0].Spec.Audiences; data != nil && (len(got) != 1 || got[0] != "api") {
			t.Fatalf("audiences %v, want [api]", got)
		}
		// Issuing does not touch the role or cluster entries.
		after := storageSnapshot(t, s)
		for _, k := range []string{"roles/" + testRole, "clusters/" + testCluster} {
			if before[k] != after[k] {
				t.Fatalf("%s changed by issuing", k)
			}
		}
	}
}
