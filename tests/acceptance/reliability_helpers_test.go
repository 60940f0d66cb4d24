package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// The reliability invariant, checked at the end of every reliability scenario:
// per role, bound Secrets carrying the plugin's label == live leases under
// <mount>/creds/<role>/; no irrevocable lease; no WAL entry older than its
// rollback age (plus the rollback manager's period); and no token or JWT of
// the scenario in Vault's server log (where the plugin logs, at trace
// level), in Vault's audit logs, or in any error or warning the scenario
// received.

// reliabAuditPath is a file audit device enabled (once) for the
// reliability tests; it stays enabled until the stack stops.
var (
	reliabAuditOnce sync.Once
	reliabAuditErr  error
)

func reliabAuditPath() string { return filepath.Join(st.Vault.Dir, "reliability-audit.log") }

func ensureReliabAudit(t *testing.T) {
	t.Helper()
	reliabAuditOnce.Do(func() {
		res, err := st.Vault.CLI(context.Background(), "audit", "enable", "-path=reliability", "file", "file_path="+reliabAuditPath())
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("%s", res)
		}
		reliabAuditErr = err
	})
	if reliabAuditErr != nil {
		t.Fatalf("vault audit enable -path=reliability file: %v", reliabAuditErr)
	}
}

// scenario collects what one scenario must never see leaked.
type scenario struct {
	mu     sync.Mutex
	mounts map[string]bool // mounts whose roles the invariant checks
	roles  map[string]bool // role names ("mount/role") the scenario used
	tokens []string
	texts  []string // errors, warnings, revoke errors received
}

func newScenario(t *testing.T, roles ...string) *scenario {
	t.Helper()
	ensureReliabAudit(t)
	sc := &scenario{mounts: map[string]bool{stack.Mount: true}, roles: map[string]bool{}}
	for _, r := range roles {
		sc.role(stack.Mount, r)
	}
	return sc
}

func (sc *scenario) role(mount, role string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.mounts[mount] = true
	sc.roles[mount+"/"+role] = true
}

func (sc *scenario) token(tok string) {
	if tok == "" {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.tokens = append(sc.tokens, tok)
}

func (sc *scenario) text(s string) {
	if s == "" {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.texts = append(sc.texts, s)
}

// listLeases lists the live lease ids under <mount>/creds/<role>/.
func listLeases(ctx context.Context, c *vaultapi.Client, mount, role string) ([]string, error) {
	sec, err := c.Logical().ListWithContext(ctx, "sys/leases/lookup/"+mount+"/creds/"+role+"/")
	if err != nil {
		return nil, err
	}
	if sec == nil {
		return nil, nil // Vault answers 404 for an empty list
	}
	raw, ok := sec.Data["keys"].([]any)
	if !ok {
		return nil, fmt.Errorf("LIST sys/leases/lookup/%s/creds/%s/: no keys list in %v", mount, role, sec.Data)
	}
	out := make([]string, 0, len(raw))
	for _, k := range raw {
		out = append(out, mount+"/creds/"+role+"/"+str(k))
	}
	return out, nil
}

// irrevocableCount reads sys/leases/count?type=irrevocable (available in
// Vault 1.21 community edition).
func irrevocableCount(ctx context.Context, c *vaultapi.Client) (int, error) {
	sec, err := c.Logical().ReadWithDataWithContext(ctx, "sys/leases/count", url.Values{"type": {"irrevocable"}})
	if err != nil {
		return -1, err
	}
	if sec == nil {
		return -1, fmt.Errorf("sys/leases/count: empty response")
	}
	n, err := sec.Data["lease_count"].(json.Number).Int64()
	return int(n), err
}

// irrevocableLeases lists irrevocable leases with their stored errors.
func irrevocableLeases(ctx context.Context, c *vaultapi.Client) (string, error) {
	sec, err := c.Logical().ReadWithDataWithContext(ctx, "sys/leases", url.Values{"type": {"irrevocable"}})
	if err != nil || sec == nil {
		return "", err
	}
	b, err := json.Marshal(sec.Data)
	return string(b), err
}

// mountUUID returns a mount's UUID (its storage lives under logical/<uuid>/).
func mountUUID(ctx context.Context, c *vaultapi.Client, mount string) (string, error) {
	sec, err := c.Logical().ReadWithContext(ctx, "sys/mounts/"+mount)
	if err != nil {
		return "", err
	}
	if sec == nil {
		return "", fmt.Errorf("sys/mounts/%s: empty response", mount)
	}
	u := str(sec.Data["uuid"])
	if u == "" {
		return "", fmt.Errorf("sys/mounts/%s: no uuid", mount)
	}
	return u, nil
}

// walAges returns the age of every WAL entry of a mount, read from Vault's
// file storage (entries are files data/logical/<uuid>/wal/_<id>).
func walAges(ctx context.Context, c *vaultapi.Client, mount string) ([]time.Duration, error) {
	u, err := mountUUID(ctx, c, mount)
	if err != nil {
		return nil, err
	}
	// The mount's own directory always exists (it holds its clusters/ and
	// roles/); without it the path is wrong and "no WAL entry" means nothing.
	mountDir := filepath.Join(st.Vault.Dir, "data", "logical", u)
	if fi, err := os.Stat(mountDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("storage of mount %s: %s is not a directory: %v", mount, mountDir, err)
	}
	dir := filepath.Join(mountDir, "wal")
	var ages []time.Duration
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		ages = append(ages, time.Since(fi.ModTime()))
		return nil
	})
	return ages, err
}

// walMaxAge is how old a WAL entry of a mount may get: its rollback age
// plus two periods of Vault's rollback manager (1 min).
func walMaxAge(mount string) time.Duration {
	if mount == walMount {
		return 5*time.Second + 2*time.Minute
	}
	return 10*time.Minute + 2*time.Minute
}

// roleSecretCounts counts labelled Secrets in the scanner namespace per
// role annotation.
func roleSecretCounts(ctx context.Context) (map[string]int, error) {
	secs, err := st.ManagedSecrets(ctx, "")
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, s := range secs {
		out[s.Annotations[stack.RoleAnnotation]]++
	}
	return out, nil
}

var (
	jwtHeaderRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}`)
	b64RunRE    = regexp.MustCompile(`[A-Za-z0-9_-]{40,}`)
)

// leakSources are the files no credential may reach.
func leakSources() []string {
	var out []string
	for _, p := range []string{st.Vault.LogPath, reliabAuditPath(), filepath.Join(st.Vault.Dir, "audit.log")} {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// assertNoLeak checks that none of the scenario's tokens (nor any of their
// payload or signature segments) and no JWT at all appears in Vault's log,
// the audit logs, or the errors and warnings the scenario received.
func assertNoLeak(t *testing.T, sc *scenario) {
	t.Helper()
	sc.mu.Lock()
	tokens := append([]string(nil), sc.tokens...)
	texts := append([]string(nil), sc.texts...)
	sc.mu.Unlock()
	segs := map[string]bool{}
	for _, tok := range tokens {
		parts := strings.Split(tok, ".")
		for _, p := range parts[1:] {
			if len(p) >= 40 {
				segs[p] = true
			}
		}
	}
	check := func(name, content string) {
		if m := jwtHeaderRE.FindString(content); m != "" {
			t.Errorf("LEAK: %s contains a JWT (%.24s...)", name, m)
		}
		leaked := 0
		for _, run := range b64RunRE.FindAllString(content, -1) {
			for seg := range segs {
				if strings.Contains(run, seg) {
					leaked++
				}
			}
		}
		if leaked > 0 {
			t.Errorf("LEAK: %s contains %d token segments of this scenario", name, leaked)
		}
	}
	scanned := 0
	for _, p := range leakSources() {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			continue
		}
		scanned += len(b)
		check(filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p), string(b))
	}
	check("errors and warnings received", strings.Join(texts, "\n"))
	t.Logf("invariant: no token of %d, no JWT in %d errors/warnings and %d KiB of Vault log and audit logs", len(tokens), len(texts), scanned/1024)
}

// assertInvariant checks the invariant for the scenario's roles (polling up
// to 30 s for asynchronous revocations to settle) and reports the counts.
func assertInvariant(t *testing.T, sc *scenario) {
	t.Helper()
	ctx := testCtx(t, 2*time.Minute)
	c := vaultClient(t)
	sc.mu.Lock()
	roles := make([]string, 0, len(sc.roles))
	for r := range sc.roles {
		roles = append(roles, r)
	}
	mounts := make([]string, 0, len(sc.mounts))
	for m := range sc.mounts {
		mounts = append(mounts, m)
	}
	sc.mu.Unlock()
	sort.Strings(roles)
	sort.Strings(mounts)

	var report string
	_, err := stack.Poll(ctx, 30*time.Second, time.Second, func() (bool, error) {
		counts, err := roleSecretCounts(ctx)
		if err != nil {
			return false, err
		}
		var parts []string
		ok := true
		for _, mr := range roles {
			mount, role, _ := strings.Cut(mr, "/")
			leases, err := listLeases(ctx, c, mount, role)
			if err != nil {
				return false, err
			}
			if counts[role] != len(leases) {
				ok = false
			}
			parts = append(parts, fmt.Sprintf("%s: %d Secrets / %d leases", mr, counts[role], len(leases)))
		}
		report = strings.Join(parts, "; ")
		return ok, nil
	})
	if err != nil {
		t.Errorf("INVARIANT: bound Secrets != live leases: %s: %v", report, err)
	} else {
		t.Logf("invariant: %s", report)
	}

	n, err := irrevocableCount(ctx, c)
	if err != nil {
		t.Errorf("sys/leases/count type=irrevocable: %v", err)
	} else if n != 0 {
		list, _ := irrevocableLeases(ctx, c)
		t.Errorf("INVARIANT: %d irrevocable leases: %s", n, list)
		sc.text(list)
	} else {
		t.Logf("invariant: 0 irrevocable leases (sys/leases/count type=irrevocable)")
	}

	for _, m := range mounts {
		ages, err := walAges(ctx, c, m)
		if err != nil {
			t.Errorf("WAL entries of %s: %v", m, err)
			continue
		}
		old := 0
		for _, a := range ages {
			if a > walMaxAge(m) {
				old++
			}
		}
		if old > 0 {
			t.Errorf("INVARIANT: %s has %d WAL entries older than %s", m, old, walMaxAge(m))
		} else {
			t.Logf("invariant: %s: %d WAL entries, none older than %s", m, len(ages), walMaxAge(m))
		}
	}
	assertNoLeak(t, sc)
}

// issueOne GETs <mount>/creds/<role> with query; the lease is revoked at
// the end of the test.
func issueOne(t *testing.T, sc *scenario, mount, role string, query url.Values) *creds {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	issued := time.Now()
	sec, err := vaultClient(t).Logical().ReadWithDataWithContext(ctx, mount+"/creds/"+role, query)
	if err != nil {
		sc.text(err.Error())
		t.Fatalf("read %s/creds/%s: %v", mount, role, err)
	}
	c := credsFromSecret(t, sec, issued)
	sc.token(c.Token)
	for _, w := range c.Warnings {
		sc.text(w)
	}
	revokeAtEnd(t, c.LeaseID)
	return c
}

// changeRequesterRules replaces the token requester Role's rules and
// restores the current ones when the test ends.
func changeRequesterRules(t *testing.T, rules []rbacv1.PolicyRule) {
	t.Helper()
	orig := requesterRules(t)
	setRequesterRules(t, rules)
	t.Cleanup(func() { setRequesterRules(t, orig) })
}

// requesterRules returns the current rules of the token requester Role.
func requesterRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	cs, err := st.Kube.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	r, err := cs.RbacV1().Roles(stack.ScannerNamespace).Get(testCtx(t, time.Minute), stack.RequesterRole, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Role %s: %v", stack.RequesterRole, err)
	}
	return r.Rules
}

// figures collects the measured results of the reliability tests; they
// are printed at the end (and copied into docs/reliability.md).
var (
	figuresMu sync.Mutex
	figures   []string
)

func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	s := fmt.Sprintf("%s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Logf("FIGURE %s", s)
	figuresMu.Lock()
	figures = append(figures, s)
	figuresMu.Unlock()
}
