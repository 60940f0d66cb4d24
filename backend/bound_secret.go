package backend

import (
	"crypto/rand"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	managedByLabel    = "app.kubernetes.io/managed-by"
	managedByValue    = "vault-plugin-scanner"
	managedBySelector = managedByLabel + "=" + managedByValue

	annotationPrefix     = "vault-plugin-scanner/"
	roleAnnotation       = annotationPrefix + "role"
	clusterAnnotation    = annotationPrefix + "cluster"
	expiresAtAnnotation  = annotationPrefix + "expires-at"
	issueAnnotation      = annotationPrefix + "issue-id"
	boundSecretNameStart = "vault-scanner-"
)

// randomString returns n random characters of [a-z0-9].
func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read never returns an error.
	for i, c := range buf {
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf)
}

// randomSecretName returns a DNS-1123 name no other lease will pick
// (36^16 ≈ 8e24). It is chosen before the Secret exists so the WAL entry can
// name it.
func randomSecretName() string {
	return boundSecretNameStart + randomString(16)
}

// boundSecret is the per-lease object the token is bound to; deleting it
// invalidates the token. It holds no data.
func boundSecret(name string, lm leaseMeta) *corev1.Secret {
	return emptySecret(objectMeta(name, lm.role.ServiceAccountNamespace, lm))
}

// emptySecret is an object for a token to be bound to: no data, and
// immutable, so nothing can be stored in it later.
func emptySecret(meta metav1.ObjectMeta) *corev1.Secret {
	immutable := true
	return &corev1.Secret{ObjectMeta: meta, Type: corev1.SecretTypeOpaque, Immutable: &immutable}
}
