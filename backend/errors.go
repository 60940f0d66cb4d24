package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// userError is a request, or stored configuration, the caller or operator
// must fix: the handler answers 400.
type userError struct{ error }

func (e userError) Unwrap() error { return e.error }

// kubeError marks an error that came from the Kubernetes API server, or from
// the network on the way to it, as opposed to the plugin's own failures.
type kubeError struct{ err error }

func (e *kubeError) Error() string { return e.err.Error() }
func (e *kubeError) Unwrap() error { return e.err }

// kubeCallError marks err (nil stays nil) as the API server's.
func kubeCallError(err error) error {
	if err == nil {
		return nil
	}
	return &kubeError{err: err}
}

// upstreamError is a failure already classified by the code that saw it,
// such as a permission a SelfSubjectAccessReview denied.
type upstreamError struct {
	status int
	msg    string
}

func (e *upstreamError) Error() string { return e.msg }

// kubeStatus says what an error from the API server means for the caller:
// 400 when the request or stored configuration must change, 502 when the
// API server refuses the plugin's own credential or RBAC, 503 when it is
// unreachable or overloaded, 504 when it timed out.
func kubeStatus(err error) int {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		if namespaceTerminating(err) {
			// A 403, but not about RBAC: the namespace is being deleted.
			return http.StatusBadRequest
		}
		switch apierrors.ReasonForError(err) {
		case "NotFound", "AlreadyExists", "Conflict", "Invalid", "BadRequest", "Gone":
			return http.StatusBadRequest
		case "Unauthorized", "Forbidden":
			return http.StatusBadGateway
		case "Timeout", "ServerTimeout":
			return http.StatusGatewayTimeout
		case "TooManyRequests", "ServiceUnavailable", "InternalError":
			return http.StatusServiceUnavailable
		}
		switch code := int(status.Status().Code); {
		case code == http.StatusGatewayTimeout:
			return http.StatusGatewayTimeout
		case code >= 500:
			return http.StatusServiceUnavailable
		}
		// Any other answer means the API server does not speak to the
		// plugin as expected.
		return http.StatusBadGateway
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return http.StatusGatewayTimeout
	case isTLSVerificationError(err):
		// The endpoint is not who the stored CA says: retrying won't help.
		return http.StatusBadGateway
	}
	return http.StatusServiceUnavailable
}

// namespaceTerminating tells the 403 the API server answers to creates in
// a namespace being deleted.
func namespaceTerminating(err error) bool {
	return apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

// unusableAnswer is an answer from the API server the plugin cannot use
// (a token that is not a JWT, say): the API server's fault, so 502.
func unusableAnswer(format string, args ...interface{}) error {
	return &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf(format, args...)}
}

func isTLSVerificationError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verification     *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verification)
}

// kubeErrorMessage explains a classified API server error and, where the
// operator must act, says where to look.
func kubeErrorMessage(status int, cluster string, err error) string {
	switch {
	case apierrors.IsUnauthorized(err):
		return fmt.Sprintf("the API server of cluster %q rejected the plugin's own credential (401): write clusters/%s with a valid service_account_jwt (in issuer mode: make the API server trust clusters/%s/authentication-config) and verify with clusters/%s/check: %v", cluster, cluster, cluster, cluster, err)
	case apierrors.IsForbidden(err):
		return fmt.Sprintf("the API server of cluster %q refused the plugin's RBAC: %v; grant it (see deploy/) and verify with clusters/%s/check", cluster, err, cluster)
	case status == http.StatusBadGateway && isTLSVerificationError(err):
		return fmt.Sprintf("cluster %q: the API server's certificate does not verify against kubernetes_ca_cert / tls_server_name: %v", cluster, err)
	case status == http.StatusServiceUnavailable:
		return fmt.Sprintf("the API server of cluster %q is unreachable or overloaded; retry later: %v", cluster, err)
	case status == http.StatusGatewayTimeout:
		return fmt.Sprintf("the API server of cluster %q timed out; retry later: %v", cluster, err)
	}
	return fmt.Sprintf("cluster %q: %v", cluster, err)
}

// errClusterNotFound is the user error for a cluster entry that does not
// exist.
func errClusterNotFound(name string) error {
	return userError{clusterMissing{name: name}}
}

// clusterMissing lets forRole say which role needs the missing cluster.
type clusterMissing struct{ name string }

func (e clusterMissing) Error() string {
	return fmt.Sprintf("cluster %q is not configured; write clusters/%s first", e.name, e.name)
}
