package backend

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

var testResource = schema.GroupResource{Resource: "secrets"}

// Every apierrors reason, and the network failures client-go reports, maps
// to the status that tells the caller whether retrying helps.
func TestKubeStatus(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"NotFound", apierrors.NewNotFound(testResource, "x"), 400},
		{"AlreadyExists", apierrors.NewAlreadyExists(testResource, "x"), 400},
		{"Conflict", apierrors.NewConflict(testResource, "x", errors.New("uid")), 400},
		{"Invalid", apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, "x", nil), 400},
		{"BadRequest", apierrors.NewBadRequest("bad"), 400},
		{"Gone", apierrors.NewGone("gone"), 400},
		{"Unauthorized", apierrors.NewUnauthorized("bad token"), 502},
		{"Forbidden", apierrors.NewForbidden(testResource, "x", errors.New("rbac")), 502},
		{"MethodNotSupported", apierrors.NewMethodNotSupported(testResource, "get"), 502},
		{"RequestEntityTooLarge", apierrors.NewRequestEntityTooLargeError("big"), 502},
		{"TooManyRequests", apierrors.NewTooManyRequests("slow down", 1), 503},
		{"ServiceUnavailable", apierrors.NewServiceUnavailable("down"), 503},
		{"InternalError", apierrors.NewInternalError(errors.New("etcd")), 503},
		{"unknown 500", apierrors.NewGenericServerResponse(500, "post", testResource, "x", "", 0, true), 503},
		{"unknown 502", apierrors.NewGenericServerResponse(502, "post", testResource, "x", "", 0, true), 503},
		{"Timeout", apierrors.NewTimeoutError("slow", 1), 504},
		{"ServerTimeout", apierrors.NewServerTimeout(testResource, "create", 1), 504},
		{"gateway timeout", apierrors.NewGenericServerResponse(504, "post", testResource, "x", "", 0, true), 504},
		{"client deadline", &url.Error{Op: "Post", URL: "https://k", Err: context.DeadlineExceeded}, 504},
		{"net timeout", &url.Error{Op: "Post", URL: "https://k", Err: timeoutErr{}}, 504},
		{"connection refused", &url.Error{Op: "Post", URL: "https://k", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, 503},
		{"unknown CA", &url.Error{Op: "Post", URL: "https://k", Err: x509.UnknownAuthorityError{}}, 502},
		{"wrong name", &url.Error{Op: "Post", URL: "https://k", Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "k"}}, 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := kubeStatus(fmt.Errorf("creating Secret: %w", tc.err)); got != tc.want {
				t.Errorf("kubeStatus = %d, want %d", got, tc.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// respond is the one boundary: user errors are 400 responses, API server
// errors coded errors, and the plugin's own failures plain errors (500).
func TestRespond(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		wantStatus int // 400: an error response; 0: a plain error
		wantIn     string
	}{
		{"user error", userError{errors.New("bad ttl")}, 400, "bad ttl"},
		{"cluster not found", fmt.Errorf("x: %w", errClusterNotFound{name: "c"}), 400, "not configured"},
		{"service account missing", kubeCallError(apierrors.NewNotFound(schema.GroupResource{Resource: "serviceaccounts"}, "sa")), 400, "not found"},
		{"name collision", kubeCallError(apierrors.NewAlreadyExists(schema.GroupResource{Resource: "serviceaccounts"}, "cluster-admin")), 400, "already exists"},
		{"credential rejected", kubeCallError(apierrors.NewUnauthorized("Unauthorized")), 502, "clusters/c/check"},
		{"RBAC refused", kubeCallError(apierrors.NewForbidden(testResource, "", errors.New(`User "x" cannot create resource "secrets"`))), 502, `cannot create resource "secrets"`},
		{"classified upstream", &upstreamError{status: 502, msg: "may not delete"}, 502, "may not delete"},
		{"unreachable", kubeCallError(&url.Error{Op: "Post", URL: "https://k", Err: errors.New("connection refused")}), 503, "unreachable"},
		{"timeout", kubeCallError(apierrors.NewServerTimeout(testResource, "create", 1)), 504, "timed out"},
		{"storage failure", errors.New("storage: disk full"), 0, "disk full"},
		// A deadline that is not the API server's is the plugin's own.
		{"own deadline", fmt.Errorf("writing WAL entry: %w", context.DeadlineExceeded), 0, "WAL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := respond("c", nil, tc.err)
			switch {
			case tc.wantStatus == 400:
				if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.wantIn) {
					t.Fatalf("got %#v, %v; want a 400 mentioning %q", resp, err, tc.wantIn)
				}
			case tc.wantStatus == 0:
				var coded logical.HTTPCodedError
				if resp != nil || err == nil || errors.As(err, &coded) || !strings.Contains(err.Error(), tc.wantIn) {
					t.Fatalf("got %#v, %v; want a plain error", resp, err)
				}
			default:
				var coded logical.HTTPCodedError
				if resp != nil || !errors.As(err, &coded) || coded.Code() != tc.wantStatus || !strings.Contains(err.Error(), tc.wantIn) {
					t.Fatalf("got %#v, %v; want a %d mentioning %q", resp, err, tc.wantStatus, tc.wantIn)
				}
			}
		})
	}
}

// The status reaches the creds caller, and nothing is left in Kubernetes.
func TestCredsStatusCodes(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube)
		want   int
		wantIn string
	}{
		{
			name:  "service account missing",
			setup: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) { deleteTestSA(t, fk) },
			want:  400, wantIn: "not found",
		},
		{
			name: "namespace missing",
			setup: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) {
				fk.clientset.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, testNamespace)
				})
			},
			want: 400, wantIn: "not found",
		},
		{
			name: "credential rejected",
			setup: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) {
				fk.setTokenErr(apierrors.NewUnauthorized("Unauthorized"))
			},
			want: 502, wantIn: "clusters/cluster-a/check",
		},
		{
			name: "token RBAC missing",
			setup: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) {
				fk.setTokenErr(apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts/token"}, testSA, errors.New(`cannot create resource "serviceaccounts/token"`)))
			},
			want: 502, wantIn: `cannot create resource "serviceaccounts/token"`,
		},
		{
			name: "delete not permitted",
			setup: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) {
				denyAccessReview(fk, "delete", "secrets")
			},
			want: 502, wantIn: `delete secrets in namespace "scanner-namespace"`,
		},
		{
			name: "API server overloaded",
			setup: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) {
				fk.setTokenErr(apierrors.NewTooManyRequests("slow down", 0))
			},
			want: 503,
		},
		{
			name: "API server timed out",
			setup: func(t *testing.T, b *backend, s logical.Storage, fk *fakeKube) {
				fk.setTokenErr(apierrors.NewServerTimeout(schema.GroupResource{Resource: "serviceaccounts"}, "create", 1))
			},
			want: 504,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, fk := newConfiguredBackend(t)
			tc.setup(t, b, s, fk)
			resp, err := request(t, b, s, logical.ReadOperation, "creds/"+testRole, nil)
			status, msg := statusOf(resp, err)
			if status != tc.want || !strings.Contains(msg, tc.wantIn) {
				t.Fatalf("status %d %q, want %d mentioning %q", status, msg, tc.want, tc.wantIn)
			}
			assertNoSecretIn(t, msg, "")
			if left := fk.managedSecrets(t); len(left) != 0 {
				t.Errorf("Secrets left: %v", names(left))
			}
			if wals := walEntries(t, s); len(wals) != 0 {
				t.Errorf("WAL entries left: %d", len(wals))
			}
		})
	}
}

// statusOf is the HTTP status Vault would answer with.
func statusOf(resp *logical.Response, err error) (int, string) {
	var coded logical.HTTPCodedError
	switch {
	case errors.As(err, &coded):
		return coded.Code(), err.Error()
	case err != nil:
		return http.StatusInternalServerError, err.Error()
	case resp != nil && resp.IsError():
		return http.StatusBadRequest, resp.Error().Error()
	}
	return http.StatusOK, ""
}

func deleteTestSA(t *testing.T, fk *fakeKube) {
	t.Helper()
	if err := fk.clientset.CoreV1().ServiceAccounts(testNamespace).Delete(context.Background(), testSA, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// denyAccessReview makes SelfSubjectAccessReviews deny verb on resource
// and allow everything else.
func denyAccessReview(fk *fakeKube, verb, resource string) {
	fk.clientset.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		review := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		attrs := review.Spec.ResourceAttributes
		review.Status.Allowed = (attrs.Verb != verb || attrs.Resource != resource) && !isAnyTokenReview(review)
		return true, review, nil
	})
}
