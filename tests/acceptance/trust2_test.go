package acceptance

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Second trust review: the plugin never issues its own identity (nor, in a
// namespace where it may mint tokens for any service account, anyone's);
// tidy deletes only what carries the plugin's ownership mark; the work a
// role can make one request do is bounded at write time; a generated
// ClusterRole cannot be pulled into another ClusterRole by aggregation.

// TestTrust2OwnIdentityRefused: on the stack whose RBAC is deploy/'s, a
// role naming the plugin's own service account is refused at write (400
// saying it is the plugin's own identity), so creds/ has nothing to issue
// and no Secret appears in the plugin's namespace; a role written while
// the cluster entry held another credential is refused at issue once the
// entry is re-pointed at the plugin's own, and after a re-point away the
// retired credential's account stays refused like the current one's;
// check lists such roles under role_errors. An existing-account role in
// team-a, where deploy/ephemeral-modes.yaml lets the plugin mint tokens for
// any service account (no resourceNames), is refused with 400 naming
// resourceNames and creates nothing there.
func TestTrust2OwnIdentityRefused(t *testing.T) {
	t.Parallel()

	t.Run("role naming the plugin's own service account", func(t *testing.T) {
		t.Parallel()
		const role = "trust2-self"
		cleanupLeftovers(t, stack.Mount+"/creds/"+role, role, st.First)
		done := step(t, "clusters/%s like %s (the plugin's credential); roles/%s for %s/%s: 400, the plugin's own identity", role, stack.ClusterName, role, stack.RequesterNamespace, stack.RequesterSA)
		writeClusterEntry(t, role, clusterArgs(st.First)...)
		code, text := writeRoleStatus(t, role, map[string]any{
			"cluster":                   role,
			"service_account_name":      stack.RequesterSA,
			"service_account_namespace": stack.RequesterNamespace,
		})
		if code != http.StatusBadRequest || !strings.Contains(strings.ToLower(text), "identity") {
			t.Errorf("write roles/%s naming the plugin's own service account: HTTP %d, want 400 saying it is the plugin's own identity: %s", role, code, text)
		} else {
			t.Logf("HTTP 400: %s", text)
		}
		if roleStored(t, role) {
			t.Errorf("roles/%s is stored after the refused write", role)
		}
		done()

		done = step(t, "vault read %s/creds/%s: 400; no Secret in %s", stack.Mount, role, stack.RequesterNamespace)
		out := credsRefusedByCLI(t, role, http.StatusBadRequest)
		if out != "" {
			t.Logf("vault read: %s", out)
		}
		if left := roleSecretsIn(t, stack.RequesterNamespace, role); len(left) != 0 {
			t.Errorf("bound Secrets of %s in %s: %v, want none", role, stack.RequesterNamespace, left)
		}
		done()
	})

	t.Run("cluster entry re-pointed at the plugin's own credential: refused at issue", func(t *testing.T) {
		t.Parallel()
		const (
			name  = "trust2-self-repoint"
			decoy = "trust2-decoy"
		)
		cleanupLeftovers(t, stack.Mount+"/creds/"+name, name, st.First)
		done := step(t, "clusters/%s with the JWT of %s/%s; roles/%s for %s/%s accepted", name, stack.RequesterNamespace, decoy, name, stack.RequesterNamespace, stack.RequesterSA)
		createServiceAccount(t, stack.RequesterNamespace, decoy)
		decoyJWT, err := st.First.CreateToken(testCtx(t, time.Minute), stack.RequesterNamespace, decoy, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		writeClusterEntry(t, name, "kubernetes_host="+st.First.URL(), "kubernetes_ca_cert=@"+st.First.CAFile(), "service_account_jwt="+decoyJWT)
		code, text := writeRoleStatus(t, name, map[string]any{
			"cluster":                   name,
			"service_account_name":      stack.RequesterSA,
			"service_account_namespace": stack.RequesterNamespace,
		})
		assertNoJWTIn(t, "the roles/ answer", text, decoyJWT)
		if code != http.StatusOK && code != http.StatusNoContent {
			t.Fatalf("write roles/%s while clusters/%s holds another identity: HTTP %d, want 200 or 204: %s", name, name, code, text)
		}
		done()

		done = step(t, "clusters/%s re-pointed at the plugin's own JWT; vault read creds/%s: 400, no Secret in %s", name, name, stack.RequesterNamespace)
		code, vr := rawVault(t, http.MethodPost, stack.Mount+"/clusters/"+name, map[string]any{"service_account_jwt": st.TokenRequesterJWT})
		assertNoJWTIn(t, "the clusters/ answer", strings.Join(vr.Errors, "; "), st.TokenRequesterJWT, decoyJWT)
		if code != http.StatusOK && code != http.StatusNoContent {
			t.Fatalf("re-point clusters/%s at the plugin's own JWT: HTTP %d: %v", name, code, vr.Errors)
		}
		out := credsRefusedByCLI(t, name, http.StatusBadRequest, "identity")
		assertNoJWTIn(t, "vault read creds/"+name, out, decoyJWT)
		if out != "" {
			t.Logf("vault read: %s", out)
		}
		if left := roleSecretsIn(t, stack.RequesterNamespace, name); len(left) != 0 {
			t.Errorf("bound Secrets of %s in %s: %v, want none", name, stack.RequesterNamespace, left)
		}
		done()

		done = step(t, "clusters/%s/check: not ok, role_errors names %s as the plugin's own identity", name, name)
		check, _ := readCheck(t, name)
		if ok, _ := check["ok"].(bool); ok || !strings.Contains(roleError(check, name), "identity") {
			t.Errorf("clusters/%s/check: ok=%v role_errors=%v, want not ok and %s refused as the plugin's own identity", name, check["ok"], check["role_errors"], name)
		}
		done()
	})

	// A re-point that changes the connection (here tls_server_name) retires
	// the old endpoint with its credential; its identity stays refused as
	// long as the retired endpoint is kept, like the current one's.
	t.Run("cluster entry re-pointed away: the retired and the current credential's identities", func(t *testing.T) {
		t.Parallel()
		const (
			name  = "trust2-self-retired"
			decoy = "trust2-decoy-retired"
		)
		done := step(t, "clusters/%s with the plugin's JWT, re-pointed (tls_server_name=localhost) with the JWT of %s/%s", name, stack.RequesterNamespace, decoy)
		writeClusterEntry(t, name, clusterArgs(st.First)...)
		createServiceAccount(t, stack.RequesterNamespace, decoy)
		decoyJWT, err := st.First.CreateToken(testCtx(t, time.Minute), stack.RequesterNamespace, decoy, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		code, vr := rawVault(t, http.MethodPost, stack.Mount+"/clusters/"+name, map[string]any{"tls_server_name": "localhost", "service_account_jwt": decoyJWT})
		assertNoJWTIn(t, "the clusters/ answer", strings.Join(vr.Errors, "; "), st.TokenRequesterJWT, decoyJWT)
		if code != http.StatusOK && code != http.StatusNoContent {
			t.Fatalf("re-point clusters/%s: HTTP %d: %v", name, code, vr.Errors)
		}
		done()

		for _, c := range []struct{ whose, role, sa string }{
			{"the retired credential's", name + "-retired", stack.RequesterSA},
			{"the current credential's", name + "-current", decoy},
		} {
			done := step(t, "roles/%s for %s/%s, %s identity: 400", c.role, stack.RequesterNamespace, c.sa, c.whose)
			code, text := writeRoleStatus(t, c.role, map[string]any{
				"cluster":                   name,
				"service_account_name":      c.sa,
				"service_account_namespace": stack.RequesterNamespace,
			})
			assertNoJWTIn(t, "the roles/ answer", text, decoyJWT)
			if code != http.StatusBadRequest || !strings.Contains(text, "identity") {
				t.Errorf("write roles/%s naming %s identity: HTTP %d, want 400 saying it is the plugin's own identity: %s", c.role, c.whose, code, text)
			} else {
				t.Logf("HTTP 400: %s", text)
			}
			if roleStored(t, c.role) {
				t.Errorf("roles/%s is stored after the refused write", c.role)
			}
			done()
		}
	})

	t.Run("existing-account role in a namespace where token rights have no resourceNames", func(t *testing.T) {
		t.Parallel()
		ensureEphemeralSetup(t)
		const (
			role = "trust2-team-sa"
			sa   = "trust2-any-sa"
		)
		cleanupLeftovers(t, stack.Mount+"/creds/"+role, role, st.First)
		done := step(t, "service account %s/%s (admin); clusters/%s like %s; roles/%s for that account", teamA, sa, role, stack.ClusterName, role)
		createServiceAccount(t, teamA, sa)
		writeClusterEntry(t, role, clusterArgs(st.First)...)
		code, text := writeRoleStatus(t, role, map[string]any{
			"cluster":                   role,
			"service_account_name":      sa,
			"service_account_namespace": teamA,
		})
		refusedAtWrite := code == http.StatusBadRequest
		switch {
		case refusedAtWrite && strings.Contains(text, "resourceNames"):
			t.Logf("refused already at role write: HTTP 400: %s", text)
		case code == http.StatusOK || code == http.StatusNoContent:
		default:
			t.Errorf("write roles/%s: HTTP %d, want 200/204 (or 400 naming resourceNames): %s", role, code, text)
		}
		done()

		done = step(t, "vault read creds/%s: 400 naming resourceNames; nothing created in %s", role, teamA)
		var out string
		if refusedAtWrite {
			out = credsRefusedByCLI(t, role, http.StatusBadRequest)
		} else {
			out = credsRefusedByCLI(t, role, http.StatusBadRequest, "resourceNames")
		}
		if out != "" {
			t.Logf("vault read: %s", out)
		}
		if left := roleSecretsIn(t, teamA, role); len(left) != 0 {
			t.Errorf("bound Secrets of %s in %s: %v, want none", role, teamA, left)
		}
		if o := managedObjects(t, teamA, role); o.counts() != [3]int{} {
			t.Errorf("%s: objects of %s: %s, want none", teamA, role, o)
		}
		done()

		if !refusedAtWrite {
			done = step(t, "clusters/%s/check: not ok, role_errors names resourceNames for %s", role, role)
			check, _ := readCheck(t, role)
			if ok, _ := check["ok"].(bool); ok || !strings.Contains(roleError(check, role), "resourceNames") {
				t.Errorf("clusters/%s/check: ok=%v role_errors=%v, want not ok and %s refused naming resourceNames", role, check["ok"], check["role_errors"], role)
			}
			done()
		}
	})
}

// TestTrust2TidyProvesOwnership: tidy deletes only objects whose ownership
// mark verifies. A namespace user (attacker e: write rights on Secrets in
// scanner-namespace, nothing else) who labels their own Secrets like the
// plugin's and copies its annotations (an expires-at in the past, the
// owner-mark of a real bound Secret, none, or a made-up one) keeps them,
// and tidy reports each under `unverified`; back-dating expires-at on a
// live lease's bound Secret does not make tidy end the lease early, and
// revoking the lease still kills the token. Not parallel, like the other
// tidy test: tidy acts on every role of the mount, and the token requester
// gets `list secrets` in scanner-namespace for the test.
func TestTrust2TidyProvesOwnership(t *testing.T) {
	const role = "trust2-tidy"
	ns := stack.ScannerNamespace
	cleanupLeftovers(t, stack.Mount+"/creds/"+role, stack.ClusterName, st.First)

	done := step(t, "the token requester may list secrets in %s (tidy); role %s; a live lease", ns, role)
	grantRequester(t, "trust2-tidy-list", ns, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}})
	writeRole(t, role, "ttl=10m")
	live := readCreds(t, role, nil)
	secs0, err := st.ManagedSecrets(testCtx(t, time.Minute), role)
	if err != nil || len(secs0) != 1 {
		t.Fatalf("bound Secrets of %s: %d (%v), want 1", role, len(secs0), err)
	}
	bound := secs0[0]
	if mark := bound.Annotations[ownerMarkAnnotation]; mark == "" {
		t.Errorf("the bound Secret %s has no %s annotation: annotations %v", bound.Name, ownerMarkAnnotation, slices.Sorted(maps.Keys(bound.Annotations)))
	}
	done()

	t.Run("a namespace user's look-alike Secrets survive and are reported", func(t *testing.T) {
		done := step(t, "namespace user %s/trust2-ns-user copies the labels and annotations of %s onto Secrets of its own", ns, bound.Name)
		user := namespaceUser(t, ns, "trust2-ns-user")
		ctx := testCtx(t, time.Minute)
		src, err := user.CoreV1().Secrets(ns).Get(ctx, bound.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the namespace user reads the bound Secret's metadata: %v", err)
		}
		past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		madeUp := make([]byte, 32)
		_, _ = rand.Read(madeUp)
		cases := []struct {
			name string
			mark func(ann map[string]string)
		}{
			{"trust2-db-credentials", func(map[string]string) {}}, // the owner-mark of the real bound Secret
			{"trust2-lookalike-no-mark", func(ann map[string]string) { delete(ann, ownerMarkAnnotation) }},
			{"trust2-lookalike-made-up-mark", func(ann map[string]string) {
				ann[ownerMarkAnnotation] = base64.RawURLEncoding.EncodeToString(madeUp)
			}},
		}
		uids := map[string]types.UID{}
		for _, c := range cases {
			ann := maps.Clone(src.Annotations)
			ann[expiresAtAnnotation] = past
			c.mark(ann)
			deleteSecretAtEnd(t, ns, c.name)
			s := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: ns, Labels: maps.Clone(src.Labels), Annotations: ann},
				StringData: map[string]string{"password": "not-the-plugins"},
			}
			created, err := user.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("the namespace user creates Secret %s: %v", c.name, err)
			}
			uids[c.name] = created.UID
			t.Logf("Secret %s: labels %v, cluster %q, issue-id copied, expires-at %s, owner-mark set: %v",
				c.name, created.Labels, ann[clusterAnnotation], past, ann[ownerMarkAnnotation] != "")
		}
		done()

		done = step(t, "vault write %s/tidy grace=0s: each look-alike kept and listed under unverified", stack.Mount)
		data, took := tidyNow(t, live.Token)
		unverified := stringList(data["unverified"])
		for _, c := range cases {
			if got := secretUID(t, ns, c.name); got != string(uids[c.name]) {
				t.Errorf("the namespace user's Secret %s: after tidy uid %q, want it kept (uid %s)", c.name, got, uids[c.name])
			}
			if want := unverifiedEntry("Secret", ns, c.name); !slices.Contains(unverified, want) {
				t.Errorf("tidy's unverified %q does not list %q", unverified, want)
			}
		}
		// Control: the plugin's own Secret, untouched, carries a mark that
		// verifies.
		if got := secretUID(t, ns, bound.Name); got != string(bound.UID) {
			t.Errorf("the live lease's bound Secret %s: after tidy uid %q, want it kept (uid %s)", bound.Name, got, bound.UID)
		}
		if entry := unverifiedEntry("Secret", ns, bound.Name); slices.Contains(unverified, entry) {
			t.Errorf("tidy's unverified lists the plugin's own untouched Secret %q: its mark should verify", entry)
		}
		if code := tokenStatus(t, live.Token); code != http.StatusOK {
			t.Errorf("the live token after tidy: HTTP %d, want 200", code)
		}
		t.Logf("tidy took %s", took.Round(time.Millisecond))
		done()
	})

	t.Run("back-dated expires-at on a live lease's Secret", func(t *testing.T) {
		done := step(t, "admin patch: %s of the live Secret %s set an hour back", expiresAtAnnotation, bound.Name)
		past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, expiresAtAnnotation, past)
		if _, err := adminClient(t).CoreV1().Secrets(ns).Patch(testCtx(t, time.Minute), bound.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch Secret %s: %v", bound.Name, err)
		}
		done()

		done = step(t, "vault write %s/tidy grace=0s: the Secret is kept and reported, the token still answers 200", stack.Mount)
		data, took := tidyNow(t, live.Token)
		if got := secretUID(t, ns, bound.Name); got != string(bound.UID) {
			t.Errorf("the live lease's bound Secret %s: after tidy uid %q, want it kept (uid %s)", bound.Name, got, bound.UID)
		}
		if want, unverified := unverifiedEntry("Secret", ns, bound.Name), stringList(data["unverified"]); !slices.Contains(unverified, want) {
			t.Errorf("tidy's unverified %q does not list %q (its mark no longer verifies)", unverified, want)
		}
		// The API server caches a token's authentication for 10 s: a
		// deleted Secret shows as 401 only after that.
		time.Sleep(11 * time.Second)
		if code := tokenStatus(t, live.Token); code != http.StatusOK {
			t.Errorf("the live token 11 s after tidy: HTTP %d, want 200 (Vault still holds lease %s)", code, live.LeaseID)
		}
		t.Logf("tidy took %s", took.Round(time.Millisecond))
		done()

		done = step(t, "vault lease revoke -sync: 401 within 15 s, Secret gone")
		start := time.Now()
		res := vaultCLI(t, "lease", "revoke", "-sync", live.LeaseID)
		assertNoJWTIn(t, "revoke output", res.Stdout+res.Stderr, st.TokenRequesterJWT, live.Token)
		if res.ExitCode != 0 {
			t.Fatalf("vault lease revoke -sync %s: %s", live.LeaseID, res)
		}
		took = waitTokenStatus(t, live.Token, http.StatusUnauthorized, 15*time.Second, start)
		t.Logf("token rejected %s after the revoke", secs(took))
		waitSecretCount(t, role, 0, 5*time.Second)
		done()
	})
}

// TestTrust2BoundedWork: generated_role_rules expanding (verbs × apiGroups ×
// resources × resourceNames, summed over rules) to more than 1024
// permissions, and allowed_kubernetes_namespaces with more than 128
// entries, are refused at role write with a 400 naming the bound; at the
// bounds they are accepted, and clusters/<name>/check over a role just
// under the expansion bound answers ok.
func TestTrust2BoundedWork(t *testing.T) {
	t.Parallel()
	rule := func(verbs, groups, resources, names []string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{Verbs: verbs, APIGroups: groups, Resources: resources, ResourceNames: names}
	}
	get := []string{"get"}
	core := []string{""}

	t.Run("role write", func(t *testing.T) {
		t.Parallel()
		// Its own clusters/ entry: no other test's check sees these roles.
		const cluster = "trust2-bounds-write"
		writeClusterEntry(t, cluster, clusterArgs(st.First)...)
		// want is 400 (naming bound) or 0 for accepted; count is the
		// expansion of the rules or the number of namespaces.
		type boundCase struct {
			name   string
			fields map[string]any
			count  int
			want   int
			bound  string
		}
		var cases []boundCase
		rulesCase := func(name string, want int, rules ...rbacv1.PolicyRule) {
			fields := map[string]any{"generated_role_rules": policyRules(t, rules...), "allowed_kubernetes_namespaces": teamA}
			cases = append(cases, boundCase{name, fields, expansion(rules), want, "1024"})
		}
		nsCase := func(name string, n, want int) {
			fields := map[string]any{"kubernetes_role_name": podReader, "allowed_kubernetes_namespaces": strings.Join(numbered("trust2-ns", n), ",")}
			cases = append(cases, boundCase{name, fields, n, want, "128"})
		}
		rulesCase("one rule of 1025", http.StatusBadRequest, rule(get, core, numbered("widgets", 25), numbered("w", 41)))
		rulesCase("two rules of 540 each", http.StatusBadRequest,
			rule([]string{"get", "list", "watch"}, core, numbered("widgets", 10), numbered("w", 18)),
			rule([]string{"get", "list", "watch"}, core, numbered("gadgets", 10), numbered("g", 18)))
		rulesCase("apiGroups multiply: 2 x 3 x 10 x 18", http.StatusBadRequest,
			rule([]string{"get", "list"}, []string{"", "apps", "batch"}, numbered("widgets", 10), numbered("w", 18)))
		rulesCase("no resourceNames count once: 1025 resources", http.StatusBadRequest, rule(get, core, numbered("widgets", 1025), nil))
		rulesCase("exactly 1024", 0, rule([]string{"get", "list"}, core, []string{"pods"}, numbered("pod", 512)))
		nsCase("129 allowed_kubernetes_namespaces", 129, http.StatusBadRequest)
		nsCase("128 allowed_kubernetes_namespaces", 128, 0)

		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				role := fmt.Sprintf("trust2-bound-%d", i)
				start := time.Now()
				fields := maps.Clone(c.fields)
				fields["cluster"] = cluster
				code, text := writeRoleStatus(t, role, fields)
				took := time.Since(start)
				switch {
				case c.want == http.StatusBadRequest && (code != c.want || !strings.Contains(text, c.bound)):
					t.Errorf("write roles/%s (%d): HTTP %d after %s, want 400 naming the bound %s: %s", role, c.count, code, secs(took), c.bound, text)
				case c.want == 0 && code != http.StatusOK && code != http.StatusNoContent:
					t.Errorf("write roles/%s (%d): HTTP %d after %s, want it accepted: %s", role, c.count, code, secs(took), text)
				default:
					t.Logf("write roles/%s (%d): HTTP %d after %s %s", role, c.count, code, secs(took), text)
				}
				if c.want == http.StatusBadRequest && roleStored(t, role) {
					t.Errorf("roles/%s is stored after the refused write", role)
				}
			})
		}
	})

	t.Run("check just under the bound", func(t *testing.T) {
		t.Parallel()
		ensureEphemeralSetup(t)
		const name = "trust2-bounds-check"
		// get and list pods, which the token requester holds in team-a
		// (deploy/ephemeral-modes.yaml), on 510 pod names: 1020 permissions
		// check expands and asks about one by one (the requester has no
		// escalate).
		rules := []rbacv1.PolicyRule{rule([]string{"get", "list"}, core, []string{"pods"}, numbered("pod", 510))}
		done := step(t, "clusters/%s (its own entry, so check sees only this role); role %s with %d permissions in %s", name, name, expansion(rules), teamA)
		writeClusterEntry(t, name, clusterArgs(st.First)...)
		code, text := writeRoleStatus(t, name, map[string]any{
			"cluster":                       name,
			"generated_role_rules":          policyRules(t, rules...),
			"allowed_kubernetes_namespaces": teamA,
		})
		if code != http.StatusOK && code != http.StatusNoContent {
			t.Fatalf("write roles/%s (%d permissions): HTTP %d, want accepted: %s", name, expansion(rules), code, text)
		}
		done()

		done = step(t, "vault read %s/clusters/%s/check", stack.Mount, name)
		check, took := readCheck(t, name)
		t.Logf("check over %d generated permissions answered in %s: ok=%v, %d checked, unchecked %v", expansion(rules), secs(took), check["ok"],
			len(stringList(check["checked_permissions"])), check["unchecked_permissions"])
		ok, _ := check["ok"].(bool)
		errs, _ := check["role_errors"].(map[string]any)
		if !ok || len(stringList(check["missing_permissions"])) != 0 || len(errs) != 0 || fmt.Sprint(check["unchecked_permissions"]) != "0" {
			t.Errorf("clusters/%s/check: ok=%v missing=%v role_errors=%v unchecked=%v notes=%v, want ok with nothing missing, refused or unchecked",
				name, check["ok"], check["missing_permissions"], check["role_errors"], check["unchecked_permissions"], check["notes"])
		}
		done()
	})
}

// TestTrust2GeneratedClusterRoleNotAggregated: a ClusterRole with an
// aggregationRule selecting scanner-test/aggregate=true (as add-ons define
// them) must not pull in the rules of a ClusterRole the plugin generates for
// a role whose extra_labels carry that label: the generated ClusterRole does
// not carry extra_labels (its RoleBinding and ServiceAccount do). The stack
// runs no kube-controller-manager, so nothing fills the aggregated
// ClusterRole's rules: the test evaluates its selector itself, against the
// generated ClusterRole's labels, with metav1.LabelSelectorAsSelector (what
// the aggregation controller does). Not parallel: it creates a managed
// ClusterRole, which the parallel tests' assertNoManaged would count, and
// gives the token requester ClusterRole rights for its duration.
func TestTrust2GeneratedClusterRoleNotAggregated(t *testing.T) {
	ensureEphemeralSetup(t)
	const (
		role       = "trust2-aggregate"
		aggregator = "trust2-aggregated"
		labelKey   = "scanner-test/aggregate"
	)
	cleanupLeftovers(t, stack.Mount+"/creds/"+role, stack.ClusterName, st.First)

	done := step(t, "ClusterRole %s aggregating %s=true; the token requester may create ClusterRoles holding pods get/list", aggregator, labelKey)
	// To create a ClusterRole granting pods get/list the requester must
	// hold that cluster-wide (it has no escalate).
	grantRequester(t, "trust2-clusterrole-maker", "", []rbacv1.PolicyRule{
		{APIGroups: []string{rbacv1.GroupName}, Resources: []string{"clusterroles"}, Verbs: []string{"create", "delete", "get"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
	})
	cs := adminClient(t)
	agg := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: aggregator},
		AggregationRule: &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{
			{MatchLabels: map[string]string{labelKey: "true"}},
		}},
	}
	agg, err := cs.RbacV1().ClusterRoles().Create(testCtx(t, time.Minute), agg, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ClusterRole %s: %v", aggregator, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cs.RbacV1().ClusterRoles().Delete(ctx, aggregator, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("cleanup: delete ClusterRole %s: %v", aggregator, err)
		}
	})
	selector, err := metav1.LabelSelectorAsSelector(&agg.AggregationRule.ClusterRoleSelectors[0])
	if err != nil {
		t.Fatal(err)
	}
	done()

	done = step(t, "role %s: generated ClusterRole (pods get/list) in %s, extra_labels %s=true; creds", role, teamA, labelKey)
	writeEphemeralRole(t, role, map[string]any{
		"kubernetes_role_type":          "ClusterRole",
		"generated_role_rules":          podReaderRules,
		"allowed_kubernetes_namespaces": teamA,
		"extra_labels":                  map[string]any{labelKey: "true"},
		"ttl":                           "10m",
	})
	c := readCreds(t, role, url.Values{"kubernetes_namespace": {teamA}})
	name := c.str("service_account_name")
	ctx := testCtx(t, time.Minute)
	if code := podsStatus(t, ctx, c.Token, teamA); code != http.StatusOK {
		t.Errorf("listing pods in %s with the lease's token: HTTP %d, want 200", teamA, code)
	}
	done()

	done = step(t, "the generated ClusterRole does not carry %s; %s's selector does not match it; RoleBinding and ServiceAccount carry it", labelKey, aggregator)
	crs := managedClusterRoles(t, role)
	if len(crs) != 1 || crs[0].Name != name {
		t.Fatalf("managed ClusterRoles of %s: %d, want one named %s", role, len(crs), name)
	}
	gen := crs[0]
	t.Logf("generated ClusterRole %s: labels %v", gen.Name, gen.Labels)
	if v, ok := gen.Labels[labelKey]; ok {
		t.Errorf("the generated ClusterRole %s carries %s=%s", gen.Name, labelKey, v)
	}
	if selector.Matches(labels.Set(gen.Labels)) {
		t.Errorf("ClusterRole %s's aggregation selector %q matches the generated ClusterRole %s: its rules would be aggregated into %s's subjects", aggregator, selector, gen.Name, aggregator)
	}
	objs := managedObjects(t, teamA, role)
	if objs.counts() != [3]int{1, 1, 0} {
		t.Fatalf("%s: want 1 ServiceAccount, 1 RoleBinding, 0 Roles; have %s", teamA, objs)
	}
	for what, m := range map[string]metav1.ObjectMeta{"ServiceAccount": objs.ServiceAccounts[0].ObjectMeta, "RoleBinding": objs.RoleBindings[0].ObjectMeta} {
		if m.Labels[labelKey] != "true" {
			t.Errorf("%s %s: labels %v, want the extra label %s=true", what, m.Name, m.Labels, labelKey)
		}
		// Control: the selector does select what carries the label.
		if !selector.Matches(labels.Set(m.Labels)) {
			t.Errorf("control: selector %q does not match the %s's labels %v", selector, what, m.Labels)
		}
	}
	if rb := objs.RoleBindings[0]; rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: gen.Name}) {
		t.Errorf("RoleBinding roleRef %+v, want ClusterRole %s", rb.RoleRef, gen.Name)
	}
	done()

	done = step(t, "revoke: ServiceAccount, RoleBinding and ClusterRole gone, the token rejected within 15 s")
	start := time.Now()
	if err := vaultClient(t).Sys().RevokeWithContext(testCtx(t, time.Minute), c.LeaseID); err != nil {
		t.Fatalf("revoke %s: %v", c.LeaseID, err)
	}
	waitNoManaged(t, teamA, role, 5*time.Second)
	if left := managedClusterRoles(t, role); len(left) != 0 {
		t.Errorf("managed ClusterRoles of %s after revoke: %d, want none", role, len(left))
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(testCtx(t, time.Minute), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get ClusterRole %s after revoke: %v, want NotFound", name, err)
	}
	took := waitPodsStatus(t, c.Token, teamA, http.StatusUnauthorized, 15*time.Second, start)
	t.Logf("token rejected %s after revoke", secs(took))
	done()
}
