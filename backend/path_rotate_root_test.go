package backend

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// In issuer mode there is no stored credential: rotate-root refuses and
// changes nothing.
func TestRotateRootIssuerMode(t *testing.T) {
	b, s, fk := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	state := recordState(t, b, s, fk, "clusters/"+testCluster, "issuer/config")
	mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster+"/rotate-root", nil, "issuer mode")
	state.check(t)
	if n := len(fk.tokenRequests()); n != 0 {
		t.Errorf("rotate-root in issuer mode sent %d TokenRequests", n)
	}
}
