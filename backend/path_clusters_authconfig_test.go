package backend

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

func TestClusterAuthenticationConfig(t *testing.T) {
	b, s, _ := newTestBackend(t)
	vaultCA := otherCAPEM(t)
	configureIssuer(t, b, s, map[string]interface{}{"issuer_ca_cert": vaultCA})
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	audience := readResponseData(t, b, s, "clusters/"+testCluster)["issuer_audience"].(string)

	resp := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/authentication-config", nil).Data
	subject := "scanner:" + testCluster
	user := testIssuer + "#" + subject
	if resp["issuer"] != testIssuer || resp["audience"] != audience || resp["subject"] != subject || resp["username"] != user {
		t.Errorf("response = %v", resp)
	}
	if got := resp["rbac_subject"].(map[string]interface{}); got["kind"] != rbacv1.UserKind || got["apiGroup"] != rbacv1.GroupName || got["name"] != user {
		t.Errorf("rbac_subject = %v", got)
	}

	var doc map[string]interface{}
	if err := yaml.UnmarshalStrict([]byte(resp["authentication_config"].(string)), &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]interface{}{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "AuthenticationConfiguration",
		"jwt": []interface{}{map[string]interface{}{
			"issuer": map[string]interface{}{
				"url":                  testIssuer,
				"audiences":            []interface{}{audience},
				"audienceMatchPolicy":  "MatchAny",
				"certificateAuthority": vaultCA,
			},
			"claimMappings": map[string]interface{}{
				"username": map[string]interface{}{"claim": "sub", "prefix": testIssuer + "#"},
			},
		}},
	}
	if mustJSON(t, doc) != mustJSON(t, want) {
		t.Errorf("authentication_config =\n%s\nwant the same as %s", resp["authentication_config"], mustJSON(t, want))
	}

	// Without issuer_ca_cert the API server uses its system roots.
	mustOK(t, b, s, logical.UpdateOperation, "issuer/config", map[string]interface{}{"issuer_ca_cert": ""})
	resp = mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/authentication-config", nil).Data
	doc = nil
	if err := yaml.Unmarshal([]byte(resp["authentication_config"].(string)), &doc); err != nil {
		t.Fatal(err)
	}
	if _, ok := doc["jwt"].([]interface{})[0].(map[string]interface{})["issuer"].(map[string]interface{})["certificateAuthority"]; ok {
		t.Error("certificateAuthority written without issuer_ca_cert")
	}
}

func TestClusterAuthenticationConfigRefused(t *testing.T) {
	b, s, _ := newConfiguredBackend(t)
	mustBadRequest(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/authentication-config", nil, "not in issuer mode")
	mustBadRequest(t, b, s, logical.ReadOperation, "clusters/nope/authentication-config", nil, "not configured")
}

// A re-pointed entry's old audience is listed for the operator to judge but
// never written into the configuration: whoever re-pointed the entry may have
// pointed it at a server that is not this one.
func TestClusterAuthenticationConfigRetiredAudiences(t *testing.T) {
	b, s, _ := newTestBackend(t)
	configureIssuer(t, b, s, nil)
	configureIssuerCluster(t, b, s, testHost, testCAPEM(t))
	before := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/authentication-config", nil).Data
	if got := before["retired_audiences"].([]map[string]interface{}); len(got) != 0 {
		t.Fatalf("retired_audiences before any re-point = %v", got)
	}
	oldAudience := before["audience"].(string)

	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"kubernetes_ca_cert": otherCAPEM(t)})
	after := mustOK(t, b, s, logical.ReadOperation, "clusters/"+testCluster+"/authentication-config", nil).Data
	newAudience := after["audience"].(string)
	if newAudience == oldAudience {
		t.Fatalf("a re-pointed entry kept its audience %q", oldAudience)
	}
	retired := after["retired_audiences"].([]map[string]interface{})
	if len(retired) != 1 || retired[0]["audience"] != oldAudience || retired[0]["kubernetes_host"] != testHost {
		t.Errorf("retired_audiences = %v, want the one old audience %q", retired, oldAudience)
	}
	var doc struct {
		JWT []struct {
			Issuer struct {
				Audiences []string `json:"audiences"`
			} `json:"issuer"`
		} `json:"jwt"`
	}
	if err := yaml.Unmarshal([]byte(after["authentication_config"].(string)), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.JWT) != 1 || len(doc.JWT[0].Issuer.Audiences) != 1 || doc.JWT[0].Issuer.Audiences[0] != newAudience {
		t.Errorf("authentication_config trusts %+v, want only the new audience %q", doc.JWT, newAudience)
	}
}
