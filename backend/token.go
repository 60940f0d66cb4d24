package backend

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// tokenClaims are the JWT claims the plugin reads. The API server signed the
// token and sends it over verified TLS, so the signature is not re-checked;
// the plugin's own stored credential is parsed the same way, only to learn
// which service account it is and when it expires.
type tokenClaims struct {
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
	Sub string `json:"sub"`
	// Kubernetes is the "kubernetes.io" claim of a TokenRequest token.
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
		Secret struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"secret"`
	} `json:"kubernetes.io"`
}

// parseTokenClaims decodes the JWT payload. Errors never include the token.
func parseTokenClaims(jwt string) (tokenClaims, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return tokenClaims{}, errors.New("issued token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return tokenClaims{}, errors.New("issued token's payload is not base64url")
	}
	var claims tokenClaims
	if err := json.Unmarshal(payload, &claims); err != nil {
		return tokenClaims{}, errors.New("issued token's payload is not JSON")
	}
	return claims, nil
}

// serviceAccount names the service account the token authenticates as,
// from the kubernetes.io claim or, failing that, from
// sub = "system:serviceaccount:<namespace>:<name>"; ok is false when the
// token says neither.
func (c tokenClaims) serviceAccount() (namespace, name string, ok bool) {
	if ns, n := c.Kubernetes.Namespace, c.Kubernetes.ServiceAccount.Name; ns != "" && n != "" {
		return ns, n, true
	}
	rest, found := strings.CutPrefix(c.Sub, "system:serviceaccount:")
	if !found {
		return "", "", false
	}
	ns, n, found := strings.Cut(rest, ":")
	if !found || ns == "" || n == "" || strings.Contains(n, ":") {
		return "", "", false
	}
	return ns, n, true
}

// expiresAt is the token's exp claim; zero when it has none.
func (c tokenClaims) expiresAt() time.Time {
	if c.Exp <= 0 {
		return time.Time{}
	}
	return time.Unix(c.Exp, 0).UTC()
}

// credentialID is how Kubernetes names this token in its audit log.
func credentialID(jti string) string {
	if jti == "" {
		return ""
	}
	return "JTI=" + jti
}
