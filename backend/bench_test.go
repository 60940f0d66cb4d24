package backend

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// BenchmarkIssue measures the plugin's own cost of one credential: request
// parsing, WAL, bound Secret, TokenRequest, kubeconfig, lease response,
// against the in-memory fake API server.
func BenchmarkIssue(b *testing.B) {
	be, s, _ := newConfiguredBackend(b)
	// Revoke as we go so the fake's object store stays small.
	b.ReportAllocs()
	for b.Loop() {
		resp, err := be.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "creds/" + testRole, Storage: s})
		if err != nil || resp.IsError() {
			b.Fatal(err, resp.Error())
		}
		if _, err := be.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildKubeconfig(b *testing.B) {
	params := kubeconfigParams{
		ClusterName: "cluster-a", Server: testHost, CACert: testCAPEM(b),
		UserName: testSA, Token: testRequesterJWT, Namespace: testNamespace,
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := buildKubeconfig(params); err != nil {
			b.Fatal(err)
		}
	}
}
