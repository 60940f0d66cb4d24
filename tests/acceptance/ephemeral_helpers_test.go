package acceptance

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// Names from deploy/ephemeral-modes.yaml.
const (
	teamA          = "team-a"
	teamB          = "team-b"
	podReader      = "pod-reader"
	ephemeralRBAC  = stack.RequesterRole // the generated Role's name in team-a and team-b
	requesterUser  = "system:serviceaccount:" + stack.RequesterNamespace + ":" + stack.RequesterSA
	ephemeralYAML  = "ephemeral-modes.yaml"
	podReaderRules = `rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
`
)

var (
	ephemeralOnce sync.Once
	ephemeralErr  error
)

// ensureEphemeralSetup applies deploy/ephemeral-modes.yaml once, creates the
// pod scan-target (and the service account it runs as) in team-a and
// team-b, and waits until the token requester's new rights are in effect.
func ensureEphemeralSetup(t *testing.T) {
	t.Helper()
	ephemeralOnce.Do(func() {
		done := step(t, "kubectl apply -f deploy/%s; pods %s in %s and %s", ephemeralYAML, stack.TargetPod, teamA, teamB)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ephemeralErr = applyEphemeralManifest(ctx)
		for _, ns := range []string{teamA, teamB} {
			if ephemeralErr == nil {
				ephemeralErr = createTeamTargetPod(ctx, ns)
			}
		}
		if ephemeralErr == nil {
			ephemeralErr = waitRequesterCan(ctx, true, "create", "serviceaccounts/token", teamA)
		}
		if ephemeralErr == nil {
			ephemeralErr = waitRequesterCan(ctx, true, "create", "serviceaccounts", teamB)
		}
		if ephemeralErr == nil {
			ephemeralErr = waitRequesterCan(ctx, true, "get", "namespaces", "")
		}
		done()
	})
	if ephemeralErr != nil {
		t.Fatalf("ephemeral setup: %v", ephemeralErr)
	}
}

func applyEphemeralManifest(ctx context.Context) error {
	p := filepath.Join(st.RepoRoot, "deploy", ephemeralYAML)
	res, err := st.KubectlAdmin(ctx, "apply", "-f", p)
	if err != nil || res.ExitCode != 0 {
		return fmt.Errorf("kubectl apply -f %s: %v\n%s", p, err, res)
	}
	return nil
}

// createTeamTargetPod creates service account scan-target and pod
// scan-target in ns (idempotent). The pod never runs (no kubelet) but is
// listed; the ServiceAccount admission plugin wants its account to exist,
// and without a controller manager no "default" account is made.
func createTeamTargetPod(ctx context.Context, ns string) error {
	cs, err := st.Kube.AdminClient()
	if err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: stack.TargetPod, Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s/%s: %w", ns, stack.TargetPod, err)
	}
	// The admission plugin may not see the new account at once: it retries.
	return createLabelledPod(ctx, ns, stack.TargetPod, nil)
}

// requesterCan asks (kubectl auth can-i --as, as admin) whether the token
// requester may do verb on resource in ns ("" = cluster-wide).
func requesterCan(ctx context.Context, verb, resource, ns string) (bool, error) {
	args := []string{"auth", "can-i", verb}
	// kubectl reads "a/b" as resource a, name b: a subresource needs its flag.
	if res, sub, ok := strings.Cut(resource, "/"); ok {
		args = append(args, res, "--subresource="+sub)
	} else {
		args = append(args, resource)
	}
	args = append(args, "--as="+requesterUser)
	if ns != "" {
		args = append(args, "-n", ns)
	}
	res, err := st.KubectlAdmin(ctx, args...)
	if err != nil {
		return false, err
	}
	switch strings.TrimSpace(res.Stdout) {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, fmt.Errorf("kubectl %v: %s", args, res)
}

// waitRequesterCan polls until requesterCan answers want: RBAC changes reach
// the authorizer through an informer.
func waitRequesterCan(ctx context.Context, want bool, verb, resource, ns string) error {
	_, err := stack.Poll(ctx, 20*time.Second, 250*time.Millisecond, func() (bool, error) {
		got, err := requesterCan(ctx, verb, resource, ns)
		return err == nil && got == want, err
	})
	if err != nil {
		return fmt.Errorf("token requester: can-i %s %s -n %q never became %v: %w", verb, resource, ns, want, err)
	}
	return nil
}

// writeEphemeralRole writes scanner/roles/<name> on cluster-a with the
// given fields (no service account) and deletes it when the test ends.
func writeEphemeralRole(t *testing.T, name string, fields map[string]any) {
	t.Helper()
	data := map[string]any{"cluster": stack.ClusterName}
	for k, v := range fields {
		data[k] = v
	}
	if _, err := vaultClient(t).Logical().WriteWithContext(testCtx(t, time.Minute), stack.Mount+"/roles/"+name, data); err != nil {
		t.Fatalf("write %s/roles/%s %v: %v", stack.Mount, name, data, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.Vault.CLI(ctx, "delete", stack.Mount+"/roles/"+name); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: delete role %s: %v %s", name, err, res)
		}
	})
}

// vaultError is a failed Vault API call: its status code and error text.
type vaultError struct {
	Status int
	Text   string
}

// asVaultError fails the test unless err is a Vault API error response.
func asVaultError(t *testing.T, what string, err error) vaultError {
	t.Helper()
	var re *vaultapi.ResponseError
	if err == nil {
		t.Fatalf("%s: succeeded, want an error", what)
	}
	if !errors.As(err, &re) {
		t.Fatalf("%s: %v, want a Vault error response", what, err)
	}
	return vaultError{Status: re.StatusCode, Text: strings.Join(re.Errors, "; ")}
}

// credsError GETs creds/<role> with query, expects it to fail, and returns
// the error. A lease that was issued anyway is revoked at the end.
func credsError(t *testing.T, role string, query map[string][]string) vaultError {
	t.Helper()
	sec, err := vaultClient(t).Logical().ReadWithDataWithContext(testCtx(t, time.Minute), stack.Mount+"/creds/"+role, query)
	if err == nil && sec != nil && sec.LeaseID != "" {
		revokeAtEnd(t, sec.LeaseID)
	}
	return asVaultError(t, fmt.Sprintf("read %s/creds/%s %v", stack.Mount, role, query), err)
}

// leaseObjects are the plugin's objects of one role in one namespace.
type leaseObjects struct {
	ServiceAccounts []corev1.ServiceAccount
	RoleBindings    []rbacv1.RoleBinding
	Roles           []rbacv1.Role
}

func (o leaseObjects) String() string {
	var names []string
	for _, x := range o.ServiceAccounts {
		names = append(names, "ServiceAccount "+x.Name)
	}
	for _, x := range o.RoleBindings {
		names = append(names, "RoleBinding "+x.Name)
	}
	for _, x := range o.Roles {
		names = append(names, "Role "+x.Name)
	}
	return fmt.Sprintf("%d ServiceAccounts, %d RoleBindings, %d Roles %v", len(o.ServiceAccounts), len(o.RoleBindings), len(o.Roles), names)
}

func (o leaseObjects) counts() [3]int {
	return [3]int{len(o.ServiceAccounts), len(o.RoleBindings), len(o.Roles)}
}

// managedObjects lists the ServiceAccounts, RoleBindings and Roles in ns
// labelled managed-by=vault-plugin-scanner; with role != "" only those
// annotated with that role.
func managedObjects(t *testing.T, ns, role string) leaseObjects {
	t.Helper()
	o, err := listManaged(testCtx(t, 30*time.Second), ns, role)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func listManaged(ctx context.Context, ns, role string) (leaseObjects, error) {
	var o leaseObjects
	cs, err := st.Kube.AdminClient()
	if err != nil {
		return o, err
	}
	opts := metav1.ListOptions{LabelSelector: stack.ManagedByLabel}
	ours := func(m metav1.ObjectMeta) bool { return role == "" || m.Annotations[stack.RoleAnnotation] == role }
	sas, err := cs.CoreV1().ServiceAccounts(ns).List(ctx, opts)
	if err != nil {
		return o, fmt.Errorf("list serviceaccounts -n %s: %w", ns, err)
	}
	for _, x := range sas.Items {
		if ours(x.ObjectMeta) {
			o.ServiceAccounts = append(o.ServiceAccounts, x)
		}
	}
	rbs, err := cs.RbacV1().RoleBindings(ns).List(ctx, opts)
	if err != nil {
		return o, fmt.Errorf("list rolebindings -n %s: %w", ns, err)
	}
	for _, x := range rbs.Items {
		if ours(x.ObjectMeta) {
			o.RoleBindings = append(o.RoleBindings, x)
		}
	}
	roles, err := cs.RbacV1().Roles(ns).List(ctx, opts)
	if err != nil {
		return o, fmt.Errorf("list roles -n %s: %w", ns, err)
	}
	for _, x := range roles.Items {
		if ours(x.ObjectMeta) {
			o.Roles = append(o.Roles, x)
		}
	}
	return o, nil
}

// assertNoManaged checks that no plugin object of role (any role if "") is
// left in each namespace, and also no ClusterRole or ClusterRoleBinding.
func assertNoManaged(t *testing.T, role string, namespaces ...string) {
	t.Helper()
	for _, ns := range namespaces {
		if o := managedObjects(t, ns, role); o.counts() != [3]int{} {
			t.Errorf("namespace %s: want no object of role %q, have %s", ns, role, o)
		}
	}
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	opts := metav1.ListOptions{LabelSelector: stack.ManagedByLabel}
	crs, err := cs.RbacV1().ClusterRoles().List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	crbs, err := cs.RbacV1().ClusterRoleBindings().List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(crs.Items)+len(crbs.Items) != 0 {
		t.Errorf("want no managed ClusterRole/ClusterRoleBinding, have %d and %d", len(crs.Items), len(crbs.Items))
	}
}

// waitNoManaged polls until no object of role is left in ns.
func waitNoManaged(t *testing.T, ns, role string, timeout time.Duration) {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	var last leaseObjects
	_, err := stack.Poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
		o, err := listManaged(ctx, ns, role)
		last = o
		return err == nil && o.counts() == [3]int{}, err
	})
	if err != nil {
		t.Fatalf("namespace %s: objects of role %s still there after %s: %s (%v)", ns, role, timeout, last, err)
	}
}

// podsStatus lists pods in ns with token and returns the HTTP status.
func podsStatus(t *testing.T, ctx context.Context, token, ns string) int {
	t.Helper()
	code, _, err := st.Kube.Get(ctx, "/api/v1/namespaces/"+ns+"/pods", token)
	if err != nil {
		t.Fatalf("GET pods -n %s with token: %v", ns, err)
	}
	return code
}

// waitPodsStatus polls listing pods in ns with token until the API server
// answers want, and returns the time from `from` until then.
func waitPodsStatus(t *testing.T, token, ns string, want int, timeout time.Duration, from time.Time) time.Duration {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	last := 0
	_, err := stack.Poll(ctx, time.Until(from.Add(timeout)), 250*time.Millisecond, func() (bool, error) {
		code, _, err := st.Kube.Get(ctx, "/api/v1/namespaces/"+ns+"/pods", token)
		last = code
		return code == want, err
	})
	if err != nil {
		t.Fatalf("listing pods in %s with the token never got HTTP %d within %s (last %d): %v", ns, want, timeout, last, err)
	}
	return time.Since(from)
}

// ownedBySA checks that meta has exactly one ownerReference, to sa.
func ownedBySA(t *testing.T, what string, meta metav1.ObjectMeta, sa corev1.ServiceAccount) {
	t.Helper()
	refs := meta.OwnerReferences
	if len(refs) != 1 || refs[0].Kind != "ServiceAccount" || refs[0].APIVersion != "v1" || refs[0].Name != sa.Name || refs[0].UID != sa.UID {
		t.Errorf("%s %s: ownerReferences %+v, want one to ServiceAccount %s (uid %s)", what, meta.Name, refs, sa.Name, sa.UID)
	}
}
