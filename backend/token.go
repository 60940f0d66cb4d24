package backend

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// tokenClaims are the JWT claims the plugin reads. The API server signed the
// token and sends it over verified TLS, so the signature is not re-checked.
type tokenClaims struct {
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
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

// credentialID is how Kubernetes names this token in its audit log.
func credentialID(jti string) string {
	if jti == "" {
		return ""
	}
	return "JTI=" + jti
}
