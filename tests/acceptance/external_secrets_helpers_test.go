package acceptance

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Names of the external-secrets tests: their own namespaces, service
// accounts, Vault auth mount, auth roles and policy, so they run beside
// the rest of the suite.
const (
	esoNamespace         = "eso-scans"
	esoIntruderNamespace = "eso-intruder"
	esoServiceAccount    = "eso-vault-auth"
	// esoRefreshAccount is the refresh test's own, so the API server's
	// audit log counts its logins apart.
	esoRefreshAccount  = "eso-vault-auth-refresh"
	esoReviewer        = "eso-token-reviewer"
	esoReviewerBinding = "eso-acceptance-token-reviewer"
	esoAuthMount       = "eso-kubernetes"
	esoPolicy          = "eso-scanner-creds"
	// esoAudience is the audience of the service-account tokens
	// external-secrets logs in with: a token for Vault is useless against
	// the API server, and the API server's own tokens are refused by Vault.
	esoAudience = "vault"
)

// esoSync is one VaultDynamicSecret and the ExternalSecret that writes its
// output to the Secret <Name>-kubeconfig: the manifests of README "Using
// it" / "external-secrets", filled in.
type esoSync struct {
	Name, Namespace string
	Path            string // Vault path, e.g. scanner/creds/eso-get
	Method          string // GET, or POST with Parameters
	Parameters      map[string]string
	LoginRole       string // role of the kubernetes auth mount
	Refresh         string // the ExternalSecret's refreshInterval
	Server          string
	AuthMount       string
	ServiceAccount  string // default esoServiceAccount
	Audience        string
}

var esoManifest = template.Must(template.New("eso").Parse(`apiVersion: generators.external-secrets.io/v1alpha1
kind: VaultDynamicSecret
metadata:
  name: {{.Name}}
  namespace: {{.Namespace}}
spec:
  path: {{.Path}}
  method: {{.Method}}
{{- if .Parameters}}
  parameters:
{{- range $k, $v := .Parameters}}
    {{$k}}: {{printf "%q" $v}}
{{- end}}
{{- end}}
  provider:
    server: {{.Server}}
    auth:
      kubernetes:
        mountPath: {{.AuthMount}}
        role: {{.LoginRole}}
        serviceAccountRef:
          name: {{.ServiceAccount}}
          audiences: [{{.Audience}}]
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: {{.Name}}
  namespace: {{.Namespace}}
spec:
  refreshInterval: {{.Refresh}}
  target:
    name: {{.Name}}-kubeconfig
  dataFrom:
  - sourceRef:
      generatorRef:
        apiVersion: generators.external-secrets.io/v1alpha1
        kind: VaultDynamicSecret
        name: {{.Name}}
`))

// applyESOSync applies the generator and the ExternalSecret, and deletes
// both and the Secret when the test ends (before the test's lease
// cleanup, registered earlier, runs: nothing refreshes after it).
func applyESOSync(t *testing.T, s esoSync) {
	t.Helper()
	if s.Namespace == "" {
		s.Namespace = esoNamespace
	}
	if s.ServiceAccount == "" {
		s.ServiceAccount = esoServiceAccount
	}
	s.Server, s.AuthMount, s.Audience = st.Vault.Addr, esoAuthMount, esoAudience
	var b bytes.Buffer
	if err := esoManifest.Execute(&b, s); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), s.Name+".yaml")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	applyAsAdmin(t, p)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.KubectlAdmin(ctx, "delete", "--ignore-not-found", "-f", p); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: kubectl delete -f %s: %v %s", p, err, res)
		}
		if res, err := st.KubectlAdmin(ctx, "delete", "secret", "--ignore-not-found", "-n", s.Namespace, s.Name+"-kubeconfig"); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: delete secret %s-kubeconfig: %v %s", s.Name, err, res)
		}
	})
}

func applyAsAdmin(t *testing.T, path string) {
	t.Helper()
	if res, err := st.KubectlAdmin(testCtx(t, time.Minute), "apply", "-f", path); err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl apply -f %s: %v %s", path, err, res)
	}
}

// esoSecret reads the Secret an ExternalSecret writes (ok false while it
// does not exist).
func esoSecret(ctx context.Context, name string) (data map[string]string, ok bool, err error) {
	cs, err := st.Kube.AdminClient()
	if err != nil {
		return nil, false, err
	}
	sec, err := cs.CoreV1().Secrets(esoNamespace).Get(ctx, name+"-kubeconfig", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return secretStrings(sec), true, nil
}

func secretStrings(sec *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range sec.Data {
		out[k] = string(v)
	}
	return out
}

// esoSynced is a Secret's content when it was first seen.
type esoSynced struct {
	at        time.Time
	token     string
	expiresAt time.Time
	data      map[string]string
}

// waitESOSecret polls until the ExternalSecret's Secret exists with a
// token other than the one given ("" for any) and returns it.
func waitESOSecret(t *testing.T, name, notToken string, timeout time.Duration) esoSynced {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	var got esoSynced
	_, err := stack.Poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
		data, ok, err := esoSecret(ctx, name)
		if err != nil || !ok || data["service_account_token"] == "" || data["service_account_token"] == notToken {
			return false, err
		}
		exp, err := time.Parse(time.RFC3339, data["expires_at"])
		if err != nil {
			return false, stack.Permanent(err)
		}
		got = esoSynced{at: time.Now(), token: data["service_account_token"], expiresAt: exp, data: data}
		return true, nil
	})
	if err != nil {
		cond := esoReadyCondition(t, esoNamespace, name)
		t.Fatalf("ExternalSecret %s wrote no new Secret within %s (Ready=%s %s: %s): %v", name, timeout, cond.Status, cond.Reason, cond.Message, err)
	}
	return got
}

// esoCondition is the ExternalSecret's Ready condition.
type esoCondition struct {
	Type, Status, Reason, Message string
}

func esoReadyCondition(t *testing.T, ns, name string) esoCondition {
	t.Helper()
	res, err := st.KubectlAdmin(testCtx(t, time.Minute), "get", "externalsecret", name, "-n", ns, "-o", "json")
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl get externalsecret %s: %v %s", name, err, res)
	}
	var es struct {
		Status struct {
			Conditions []esoCondition `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &es); err != nil {
		t.Fatalf("parse externalsecret %s: %v", name, err)
	}
	for _, c := range es.Status.Conditions {
		if c.Type == "Ready" {
			return c
		}
	}
	return esoCondition{Type: "Ready", Status: "Unknown"}
}

// esoWarnings are the messages of the Warning events of an object in ns.
func esoWarnings(t *testing.T, ns, name string) []string {
	t.Helper()
	res, err := st.KubectlAdmin(testCtx(t, time.Minute), "get", "events", "-n", ns, "--field-selector", "type=Warning,involvedObject.name="+name, "-o", "json")
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("kubectl get events: %v %s", err, res)
	}
	var list struct {
		Items []struct {
			Message string `json:"message"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &list); err != nil {
		t.Fatalf("parse events: %v", err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Message)
	}
	return out
}

// writeKubeconfigFile writes a synced kubeconfig to a 0600 file.
func writeKubeconfigFile(t *testing.T, s esoSynced) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := stack.WriteFile0600(p, []byte(s.data["kubeconfig"])); err != nil {
		t.Fatal(err)
	}
	return p
}

// sleepUntil waits until at (or returns at once if it passed).
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// tokenSet collects the tokens the subtests saw, for the log check at the
// end.
type tokenSet struct {
	mu     sync.Mutex
	tokens []string
}

func (s *tokenSet) add(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, tok)
}

func (s *tokenSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tokens)
}

func (s *tokenSet) leakedInto(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, tok := range s.tokens {
		if strings.Contains(text, tok) {
			n++
		}
	}
	return n
}

// esoKubeObjects: the namespace external-secrets syncs into, the service
// account it logs in to Vault as, one of the same name in another
// namespace, and the token reviewer Vault's kubernetes auth calls
// TokenReview with (system:auth-delegator, as Vault's docs set it up).
const esoKubeObjects = `apiVersion: v1
kind: Namespace
metadata:
  name: ` + esoNamespace + `
---
apiVersion: v1
kind: Namespace
metadata:
  name: ` + esoIntruderNamespace + `
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ` + esoServiceAccount + `
  namespace: ` + esoNamespace + `
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ` + esoRefreshAccount + `
  namespace: ` + esoNamespace + `
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ` + esoServiceAccount + `
  namespace: ` + esoIntruderNamespace + `
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ` + esoReviewer + `
  namespace: ` + esoNamespace + `
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ` + esoReviewerBinding + `
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- kind: ServiceAccount
  name: ` + esoReviewer + `
  namespace: ` + esoNamespace + `
`

// esoLoginRole is a role of the kubernetes auth mount: the service
// accounts of eso-scans, tokens for audience vault, the policy, and
// the login token's TTL (which bounds every lease the login creates).
func esoLoginRole(t *testing.T, name string, ttl time.Duration) {
	t.Helper()
	mustVault(t, "write", "auth/"+esoAuthMount+"/role/"+name,
		"bound_service_account_names="+esoServiceAccount+","+esoRefreshAccount,
		"bound_service_account_namespaces="+esoNamespace,
		"audience="+esoAudience,
		"token_policies="+esoPolicy,
		"token_ttl="+ttl.String(), "token_max_ttl="+ttl.String())
}

// setupESOVaultAuth creates the Kubernetes objects, enables the kubernetes
// auth method at its own path and writes the policy (the roles named in
// it, not a glob: eso-forbidden stays outside). The auth mount, and with
// it every login token and the leases they created, goes when the test
// ends.
func setupESOVaultAuth(t *testing.T, policyRoles []string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "eso-objects.yaml")
	if err := os.WriteFile(p, []byte(esoKubeObjects), 0o600); err != nil {
		t.Fatal(err)
	}
	applyAsAdmin(t, p)
	reviewerJWT, err := st.First.CreateToken(testCtx(t, time.Minute), esoNamespace, esoReviewer, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.KubectlAdmin(ctx, "delete", "clusterrolebinding", "--ignore-not-found", esoReviewerBinding); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: delete clusterrolebinding %s: %v %s", esoReviewerBinding, err, res)
		}
	})
	authMethodAtEnd(t, esoAuthMount, "kubernetes")
	mustVault(t, "write", "auth/"+esoAuthMount+"/config",
		"kubernetes_host="+st.Kube.URL,
		"kubernetes_ca_cert=@"+st.Kube.PKI.CAFile,
		"token_reviewer_jwt="+reviewerJWT,
		"disable_local_ca_jwt=true")
	var policy strings.Builder
	for _, role := range policyRoles {
		policy.WriteString("path \"" + stack.Mount + "/creds/" + role + "\" {\n  capabilities = [\"read\", \"create\", \"update\"]\n}\n")
	}
	policyAtEnd(t, esoPolicy, policy.String())
}

// tokenRequestsFor counts the successful TokenRequests for namespace/sa in
// the API server's audit log: external-secrets makes one for each Vault
// login.
func tokenRequestsFor(t *testing.T, namespace, sa string) int {
	t.Helper()
	n := 0
	for _, ev := range readJSONLines[kubeAuditEvent](t, st.Kube.AuditLogPath) {
		if ev.Verb == "create" && ev.ObjectRef.Resource == "serviceaccounts" && ev.ObjectRef.Subresource == "token" &&
			ev.ObjectRef.Namespace == namespace && ev.ObjectRef.Name == sa && ev.ResponseStatus.Code == http.StatusCreated {
			n++
		}
	}
	return n
}

// leaseIssueTime looks a lease up and returns when it was issued.
func leaseIssueTime(t *testing.T, leaseID string) time.Time {
	t.Helper()
	sec, err := vaultClient(t).Logical().WriteWithContext(testCtx(t, 30*time.Second), "sys/leases/lookup", map[string]any{"lease_id": leaseID})
	if err != nil || sec == nil {
		t.Fatalf("lease lookup %s: %v", leaseID, err)
	}
	issued, err := time.Parse(time.RFC3339Nano, str(sec.Data["issue_time"]))
	if err != nil {
		t.Fatalf("lease %s: issue_time %v: %v", leaseID, sec.Data["issue_time"], err)
	}
	return issued
}

// issueBursts groups issue times less than a second apart and returns the
// size of each group, in time order.
func issueBursts(issued map[string]time.Time) []int {
	times := make([]time.Time, 0, len(issued))
	for _, at := range issued {
		times = append(times, at)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var bursts []int
	for i, at := range times {
		if i == 0 || at.Sub(times[i-1]) >= time.Second {
			bursts = append(bursts, 0)
		}
		bursts[len(bursts)-1]++
	}
	return bursts
}
