package backend

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

// revokeRequest is what Vault sends when a lease ends: only the secret's
// internal data, no role and no response data.
func revokeRequest(s logical.Storage, issued *logical.Response) *logical.Request {
	return &logical.Request{
		Operation: logical.RevokeOperation,
		Storage:   s,
		Secret:    &logical.Secret{InternalData: issued.Secret.InternalData},
	}
}

func TestRevokeDeletesBoundSecret(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	keep := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	revoked := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)

	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, revoked)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	left := fk.managedSecrets(t)
	if len(left) != 1 || left[0].Name != leaseObjects(t, keep)[0].Name {
		t.Fatalf("after one revoke the Secrets left are %v, want only the other lease's", names(left))
	}
	// Twice is fine: a missing Secret counts as revoked.
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, revoked)); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
}

func TestRevokeIsConcurrencySafe(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent revoke: %v", err)
	}
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets left: %v", names(left))
	}
}

func TestRevokeSparesAReplacedSecret(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	name := leaseObjects(t, resp)[0].Name
	secrets := fk.clientset.CoreV1().Secrets(testNamespace)
	// Someone deleted the bound Secret and made another one with its name.
	if err := secrets.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	replacement := boundSecret(name, testLeaseMeta("some-issue"))
	replacement.UID = "other-uid"
	if _, err := secrets.Create(context.Background(), replacement, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, err := secrets.Get(context.Background(), name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the replacement Secret was deleted: %v", err)
	}
}

func TestRevokeFailureIsAnErrorWithoutSecrets(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	token := resp.Data["service_account_token"].(string)
	fk.clientset.PrependReactor("delete", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
	})
	_, err := b.HandleRequest(context.Background(), revokeRequest(s, resp))
	if err == nil {
		t.Fatal("revoke succeeded while the API server fails; Vault must retry it")
	}
	assertNoSecretIn(t, err.Error(), token)
}

func TestRevokeNeedsItsInternalData(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	_, err := b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Storage: s,
		Secret: &logical.Secret{InternalData: map[string]interface{}{"secret_type": secretTokenType}},
	})
	if err == nil {
		t.Fatal("revoke without the bound Secret's name succeeded")
	}
}

func TestIssueFailureAfterSecretLeavesNothing(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	fk.setTokenErr(apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts/token"}, testSA, errors.New("RBAC: access denied")))
	resp, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if err == nil {
		t.Fatalf("issue succeeded although TokenRequest was refused: %v", resp)
	}
	if resp != nil {
		t.Errorf("an internal failure returned a response too: %v", resp)
	}
	if !containsFold(err.Error(), "forbidden") {
		t.Errorf("error %q does not say the request was forbidden", err)
	}
	if left := fk.managedSecrets(t); len(left) != 0 {
		t.Errorf("Secrets left after a failed issue: %v", names(left))
	}
	if wals, _ := framework.ListWAL(context.Background(), s); len(wals) != 0 {
		t.Errorf("WAL entries left after a cleaned-up failure: %d", len(wals))
	}
}

func leaseObjects(t *testing.T, resp *logical.Response) []objectRef {
	t.Helper()
	lease, err := leaseRecordFrom(resp.Secret.InternalData)
	if err != nil {
		t.Fatal(err)
	}
	return lease.Objects
}

// A lease the plugin could not revoke is never issued.
func TestIssueRefusedWhenRevokeWouldBeForbidden(t *testing.T) {
	b, s, fk := newConfiguredBackend(t)
	var reviews int
	allowDelete := false
	fk.setAuthorizer(func(attrs authorizationv1.ResourceAttributes) bool {
		reviews++
		return (attrs.Verb != "delete" || attrs.Resource != "secrets" || allowDelete) && deployRights(attrs)
	})
	_, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	if err == nil || !strings.Contains(err.Error(), `may not delete secrets in namespace "scanner-namespace"`) {
		t.Fatalf("error = %v", err)
	}
	if n := len(fk.managedSecrets(t)); n != 0 || len(fk.tokenRequests()) != 0 {
		t.Fatalf("a lease that could not be revoked created %d Secrets", n)
	}

	allowDelete = true
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
	// One about the token right's scope and two about delete: each
	// answer that allows issuing is remembered.
	if reviews != 3 {
		t.Errorf("access reviews = %d, want 3 (an answer that allows issuing is remembered)", reviews)
	}
}

// The lease Secret's Fields document exactly the keys a credential
// response returns: all of them but conditionalFields in every response,
// and all of them for a target-scoped lease.
func TestSecretFieldsMatchResponse(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	tb, ts, _ := targetBackend(t, map[string]interface{}{"target_profiles": "exec", "allowed_kubernetes_namespaces": "team-a"})
	documented := sortedKeys(b.Secret(secretTokenType).Fields)
	cases := []struct {
		name string
		resp *logical.Response
		want []string
	}{
		{"existing service account", mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil), slices.DeleteFunc(slices.Clone(documented), func(k string) bool { return slices.Contains(conditionalFields, k) })},
		{"target-scoped", mustOK(t, tb, ts, logical.ReadOperation, "creds/scan", map[string]interface{}{"targets": "pod-a"}), documented},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if returned := sortedKeys(tc.resp.Data); !slices.Equal(tc.want, returned) {
				t.Errorf("Fields document %v, the response returns %v", tc.want, returned)
			}
		})
	}
}

// A revoke while the API server fails is an error, so Vault retries it; once
// the server answers again, the same revoke succeeds.
func TestRevokeRetriedUntilAPIServerAnswers(t *testing.T) {
	api := newAPIServer(t)
	b, s := newBackendFor(t, api.URL, string(tlsServerCA(api.Server)))
	resp := mustOK(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)

	api.mu.Lock()
	api.deleteStatus = apierrors.NewServiceUnavailable("the server is shutting down")
	api.mu.Unlock()
	_, err := b.HandleRequest(context.Background(), revokeRequest(s, resp))
	if err == nil {
		t.Fatal("revoke reported success while the Secret could not be deleted")
	}
	assertNoSecretIn(t, err.Error(), resp.Data["service_account_token"].(string))

	api.mu.Lock()
	api.deleteStatus = nil
	api.mu.Unlock()
	if _, err := b.HandleRequest(context.Background(), revokeRequest(s, resp)); err != nil {
		t.Fatalf("retried revoke: %v", err)
	}
	if secrets, deletes := api.state(); secrets != 0 || deletes != 1 {
		t.Errorf("after the retried revoke: %d Secrets, %d deletes", secrets, deletes)
	}
}
