package acceptance

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// agentTemplate renders the kubeconfig of a 45 s lease (ttl passed as a
// query parameter: Vault Agent sends a GET), with its expiry as a comment.
const agentTemplate = `{{ with secret "scanner/creds/agent?ttl=45s" }}# expires_at={{ .Data.expires_at }}
{{ .Data.kubeconfig }}{{ end }}
`

var expiresRE = regexp.MustCompile(`(?m)^# expires_at=(\S+)$`)
var tokenRE = regexp.MustCompile(`(?m)^\s+token: (\S+)$`)

type rendered struct {
	at      time.Time
	token   string
	expires time.Time
}

func parseRendered(b []byte) (rendered, bool) {
	m := expiresRE.FindSubmatch(b)
	tk := tokenRE.FindSubmatch(b)
	if m == nil || tk == nil {
		return rendered{}, false
	}
	exp, err := time.Parse(time.RFC3339, string(m[1]))
	if err != nil {
		return rendered{}, false
	}
	return rendered{at: time.Now(), token: string(tk[1]), expires: exp}, true
}

// Test 4: Vault Agent renders the kubeconfig with perms 0600; kubectl works
// with it; with a 45 s lease it renders a new credential before the old one
// expires.
func TestVaultAgentRendersKubeconfig(t *testing.T) {
	t.Parallel()
	writeRole(t, "agent")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	tmplFile := filepath.Join(dir, "kubeconfig.ctmpl")
	out := filepath.Join(dir, "kubeconfig")
	cfgFile := filepath.Join(dir, "agent.hcl")
	cfg := fmt.Sprintf(`vault {
  address = %q
}
auto_auth {
  method "token_file" {
    config = {
      token_file_path = %q
    }
  }
}
template_config {
  exit_on_retry_failure = true
}
template {
  source      = %q
  destination = %q
  perms       = "0600"
}
`, st.Vault.Addr, tokenFile, tmplFile, out)
	for p, data := range map[string]string{tokenFile: st.Vault.RootToken, tmplFile: agentTemplate, cfgFile: cfg} {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	done := step(t, "vault agent -config=%s", cfgFile)
	logPath := filepath.Join(st.Dir, "vault-agent.log")
	agent, err := stack.StartProcess("vault-agent", logPath, nil, st.Tools.Vault, "agent", "-config="+cfgFile, "-log-level=debug")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("---- vault agent log (%s) ----\n%s", logPath, agent.Tail(60))
		}
		// Revoke what the agent fetched.
		vaultCLI(t, "lease", "revoke", "-prefix", stack.Mount+"/creds/agent")
	})
	var first rendered
	_, err = stack.Poll(testCtx(t, time.Minute), 45*time.Second, 200*time.Millisecond, func() (bool, error) {
		if exited, werr := agent.Exited(); exited {
			return false, fmt.Errorf("agent exited: %v", werr)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			return false, nil
		}
		var ok bool
		first, ok = parseRendered(b)
		return ok, nil
	})
	if err != nil {
		t.Fatalf("agent did not render %s: %v", out, err)
	}
	done()
	t.Logf("first render: credential expires at %s (in %s)", first.expires.Format(time.RFC3339), secs(time.Until(first.expires)))

	done = step(t, "rendered file: mode 0600, kubectl works, lease of 45 s")
	assertMode(t, out, 0o600)
	if r := kubectl(t, out, "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl with the agent's kubeconfig: %s", r)
	}
	if d := time.Until(first.expires); d > 46*time.Second {
		t.Fatalf("expires_at is %s away: ?ttl=45s did not reach the plugin", secs(d))
	}
	done()

	done = step(t, "wait for the agent to render a new credential")
	var second rendered
	_, err = stack.Poll(testCtx(t, 2*time.Minute), 60*time.Second, 200*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(out)
		if err != nil {
			return false, nil
		}
		r, ok := parseRendered(b)
		if ok && r.token != first.token {
			second = r
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no new credential rendered: %v", err)
	}
	oldStatus := tokenStatus(t, first.token)
	margin := first.expires.Sub(second.at)
	t.Logf("new credential rendered %s after the first, %s before the old one expires; old token HTTP %d",
		secs(second.at.Sub(first.at)), secs(margin), oldStatus)
	if margin <= 0 || oldStatus != http.StatusOK {
		t.Errorf("the new credential came after the old one expired (margin %s, old token HTTP %d)", secs(margin), oldStatus)
	}
	done()

	done = step(t, "new file: mode 0600, kubectl works; the old token dies at its expiry")
	assertMode(t, out, 0o600)
	if r := kubectl(t, out, "get", "pods"); r.ExitCode != 0 {
		t.Fatalf("kubectl with the re-rendered kubeconfig: %s", r)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read the rendered kubeconfig: %v", err)
	}
	if !bytes.Contains(b, []byte("current-context:")) {
		t.Errorf("rendered file is not a kubeconfig")
	}
	took := waitTokenStatus(t, first.token, http.StatusUnauthorized, time.Until(first.expires)+25*time.Second, first.expires)
	t.Logf("old token rejected %s after its expires_at", secs(took))
	if took < -2*time.Second {
		t.Errorf("the old token was rejected %s before its expires_at", secs(-took))
	}
	done()
}
