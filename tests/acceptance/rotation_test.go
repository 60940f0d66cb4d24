package acceptance

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// rotate-root on a cluster written with a 10-minute bootstrap token: the
// plugin's next requests carry the new credential (kube-apiserver audit log,
// and the TokenRequest that issued it was made with the bootstrap token);
// the bootstrap token is left to the operator; after a second rotation the
// first rotated token is rejected (401) once its grace is over, and its
// Secret is gone.
func TestRotateRootRealStack(t *testing.T) {
	t.Parallel()
	const name = "rot-manual"
	rec := newTokenRecorder(t)

	done := step(t, "write clusters/%s with a 10-minute bootstrap token; check reports self-rotation", name)
	bootstrap := rotationCluster(t, rec, name)
	bootID := credentialIDOf(bootstrap)
	cluster, _ := vaultJSON(t, "read", stack.Mount+"/clusters/"+name)
	if str(cluster["service_account_jwt_credential_id"]) != bootID || str(cluster["service_account_jwt_expires_at"]) == "" {
		t.Fatalf("cluster read %v, want the bootstrap's credential id %s and expiry", cluster, bootID)
	}
	check, _ := vaultJSON(t, "read", stack.Mount+"/clusters/"+name+"/check")
	if check["self_rotation_permitted"] != true {
		t.Fatalf("check: %v, want self_rotation_permitted with deploy/token-requester.yaml", check)
	}
	done()

	done = step(t, "rotate-root: a new credential, the bootstrap token left to the operator")
	start := time.Now()
	first, warnings := vaultJSON(t, "write", "-f", stack.Mount+"/clusters/"+name+"/rotate-root")
	t.Logf("rotate-root took %s", time.Since(start).Round(time.Millisecond))
	c1 := str(first["credential_id"])
	if !strings.HasPrefix(c1, "JTI=") || c1 == bootID || str(first["expires_at"]) == "" {
		t.Fatalf("rotate-root answered %v", first)
	}
	if len(warnings) == 0 || !strings.Contains(strings.Join(warnings, " "), "not created by the plugin") {
		t.Errorf("warnings %q, want one saying the bootstrap token is left to the operator", warnings)
	}
	if code := requesterStatus(t, bootstrap); code == http.StatusUnauthorized {
		t.Error("the bootstrap token stopped working: it is the operator's")
	}
	done()

	done = step(t, "creds after the rotation use the new credential (kube-apiserver audit)")
	c := readCreds(t, name, nil)
	if code := tokenStatus(t, c.Token); code != http.StatusOK {
		t.Fatalf("scanner token: HTTP %d", code)
	}
	if got := rec.tokenRequestsFor(stack.ScannerNamespace, stack.ScannerSA); len(got) == 0 || got[len(got)-1] != c1 {
		t.Fatalf("TokenRequests for the scanner were made with %v, want %s last", got, c1)
	}
	used, issuedBy := auditTokenRequest(t, c1, stack.ScannerNamespace, stack.ScannerSA)
	if !used {
		t.Fatalf("kube audit: no TokenRequest for %s/%s made with %s", stack.ScannerNamespace, stack.ScannerSA, c1)
	}
	if issuedBy != bootID {
		t.Errorf("kube audit: %s was issued by a request with %q, want the bootstrap token %s", c1, issuedBy, bootID)
	}
	t.Logf("kube audit: %s issued with the bootstrap %s; the scanner's TokenRequest made with %s", c1, bootID, c1)
	token1 := rec.token(c1)
	if token1 == "" {
		t.Fatal("the recorder never saw the first rotated token")
	}
	done()

	done = step(t, "second rotation: the first rotated token works through the grace, then is rejected and its Secret gone")
	second, _ := vaultJSON(t, "write", "-f", stack.Mount+"/clusters/"+name+"/rotate-root")
	rotatedAt := time.Now()
	c2 := str(second["credential_id"])
	if c2 == c1 || str(second["previous_credential_id"]) != c1 {
		t.Fatalf("second rotate-root answered %v, want a new id after %s", second, c1)
	}
	if code := requesterStatus(t, token1); code == http.StatusUnauthorized {
		t.Error("the first rotated token was rejected at once, before its grace")
	}
	gone := waitSecretGone(t, str(first["bound_secret"]), 90*time.Second)
	rejected := waitRequesterRejected(t, token1, 30*time.Second)
	t.Logf("RESULT rotate-root: previous rotation's Secret gone %s after the second rotation, its token rejected (401) %s later", secs(gone), secs(rejected))
	if time.Since(rotatedAt) < 25*time.Second {
		t.Errorf("the previous token died %s after the rotation, before the 30 s grace", secs(time.Since(rotatedAt)))
	}
	c = readCreds(t, name, nil)
	if code := tokenStatus(t, c.Token); code != http.StatusOK {
		t.Fatalf("scanner token after the second rotation: HTTP %d", code)
	}
	if got := rec.tokenRequestsFor(stack.ScannerNamespace, stack.ScannerSA); got[len(got)-1] != c2 {
		t.Fatalf("TokenRequests for the scanner were made with %v, want %s last", got, c2)
	}
	cluster, _ = vaultJSON(t, "read", stack.Mount+"/clusters/"+name)
	if str(cluster["service_account_jwt_credential_id"]) != c2 || str(cluster["last_rotated_at"]) == "" || str(cluster["last_rotation_error"]) != "" {
		t.Errorf("cluster read %v", cluster)
	}
	done()
}

// rotation_period=1m: the active node rotates by itself from PeriodicFunc
// (about once a minute), and credentials keep working across at least two
// automatic rotations; each replaced rotated token dies after its grace.
func TestAutomaticRotationRealStack(t *testing.T) {
	t.Parallel()
	const name = "rot-auto"
	rec := newTokenRecorder(t)

	done := step(t, "write clusters/%s with a 10-minute bootstrap token and rotation_period=1m", name)
	bootstrap := rotationCluster(t, rec, name, "rotation_period=1m")
	seen := []string{credentialIDOf(bootstrap)}
	done()

	for rotation := 1; rotation <= 2; rotation++ {
		done = step(t, "automatic rotation %d, then creds work", rotation)
		var cluster map[string]any
		waited, err := stack.Poll(testCtx(t, 4*time.Minute), 3*time.Minute, 2*time.Second, func() (bool, error) {
			cluster, _ = vaultJSON(t, "read", stack.Mount+"/clusters/"+name)
			return str(cluster["service_account_jwt_credential_id"]) != seen[len(seen)-1], nil
		})
		if err != nil {
			t.Fatalf("no automatic rotation within 3 minutes (last_rotation_error %q): %v", str(cluster["last_rotation_error"]), err)
		}
		id := str(cluster["service_account_jwt_credential_id"])
		seen = append(seen, id)
		t.Logf("rotated to %s after %s (last_rotated_at %s)", id, secs(waited), str(cluster["last_rotated_at"]))
		c := readCreds(t, name, nil)
		if code := tokenStatus(t, c.Token); code != http.StatusOK {
			t.Fatalf("scanner token after rotation %d: HTTP %d", rotation, code)
		}
		if got := rec.tokenRequestsFor(stack.ScannerNamespace, stack.ScannerSA); got[len(got)-1] != id {
			t.Fatalf("the scanner's TokenRequest was made with %s, want %s", got[len(got)-1], id)
		}
		done()
	}

	done = step(t, "the first automatically rotated token is rejected after the second rotation")
	token1 := rec.token(seen[1])
	if token1 == "" {
		t.Fatal("the recorder never saw the first rotated token")
	}
	rejected := waitRequesterRejected(t, token1, 90*time.Second)
	t.Logf("RESULT automatic rotation: two rotations (%s), creds worked after each; the first rotated token rejected %s after the second was seen", strings.Join(seen, " -> "), secs(rejected))
	done()
}
