// Command bench is the load generator: on one local stack (etcd,
// kube-apiserver, Vault) it issues and revokes credentials at several client
// concurrencies with
//
//   - plugin:       this plugin, GET scanner/creds/cluster-a
//   - builtin-sa:   Vault's built-in kubernetes engine, service_account_name mode
//   - builtin-role: the same, kubernetes_role_name mode (its revocable mode)
//   - bare:         the plugin's two API calls (Secret create + bound
//     TokenRequest) with client-go directly, unthrottled: the physical limit
//   - vault-read:   LIST scanner/roles/, Vault's own floor for a plugin
//     request (no lease, no Kubernetes call)
//
// and prints credentials/s, latency quantiles, revocations/s (per-lease
// sys/leases/revoke at the same concurrency, and revoke-prefix for the
// plugin), errors, peak RSS and CPU per credential of every process, then
// the ratios the performance targets are set for. `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

var allEngines = []string{engineBare, enginePlugin, engineVaultRead, engineBuiltinSA, engineBuiltinRole}

type config struct {
	levels   []int
	duration time.Duration
	warmup   int
	rounds   int
	prefixN  int
	engines  []string
	logLevel string
	profile  string // directory for Vault CPU profiles
	storage  string // Vault's storage backend
	dataDir  string // where the stack keeps etcd's and Vault's data
	dataFS   string // the filesystem under dataDir
}

func main() {
	levels := flag.String("c", "1,8,32", "client concurrency levels, comma-separated")
	duration := flag.Duration("duration", 15*time.Second, "how long each engine issues at each level, in all (requests in flight at the end of a slice finish)")
	rounds := flag.Int("rounds", 3, "slices each level's issuing time is split into, the engines taking turns, so a changing background load on a shared machine hits them alike (the built-in engines, capped by their client at 5 requests/s, run in one slice)")
	warmup := flag.Int("warmup", 10, "unmeasured credentials issued and revoked before each measurement (at least one per client)")
	prefixN := flag.Int("prefix-n", 500, "plugin leases issued for each revoke-prefix measurement (0 skips it)")
	engines := flag.String("engines", strings.Join(allEngines, ","), "engines to run, in this order at each level")
	logLevel := flag.String("vault-log-level", "info", "Vault log level during the run (sys/loggers; the stack starts Vault at trace); empty keeps it")
	profile := flag.String("profile", "", "directory to save Vault CPU profiles (sys/pprof/profile) of the plugin slices in, one per level (the last slice)")
	storage := flag.String("vault-storage", "file", "Vault's storage: file (as the acceptance tests) or raft (single-node Integrated Storage)")
	dataParent := flag.String("data-dir", defaultDataParent(), "parent directory for the stack's data (etcd, Vault storage, logs); empty: TMPDIR. The default is tmpfs (/dev/shm) when present: see docs/performance.md")
	keep := flag.Bool("keep-logs", false, "keep the stack's directory and logs after a successful run")
	quick := flag.Bool("quick", false, "short smoke run: -c 1,8 -duration 2s -rounds 1 -warmup 2 -prefix-n 50, unless given explicitly")
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{"c": "1,8", "duration": "2s", "rounds": "1", "warmup": "2", "prefix-n": "50"} {
			if !set[name] {
				_ = flag.Set(name, v)
			}
		}
	}
	cfg := config{duration: *duration, rounds: max(*rounds, 1), warmup: *warmup, prefixN: *prefixN, logLevel: *logLevel, profile: *profile, storage: *storage}
	for _, f := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad -c %q\n", *levels)
			os.Exit(2)
		}
		cfg.levels = append(cfg.levels, n)
	}
	for _, e := range strings.Split(*engines, ",") {
		e = strings.TrimSpace(e)
		if !slices.Contains(allEngines, e) {
			fmt.Fprintf(os.Stderr, "bench: unknown engine %q\n", e)
			os.Exit(2)
		}
		cfg.engines = append(cfg.engines, e)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	dir, err := os.MkdirTemp(*dataParent, "vault-plugin-scanner-stack-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: FAILED to create the stack's directory: %v\n", err)
		os.Exit(1)
	}
	cfg.dataDir, cfg.dataFS = dir, fsType(dir)
	s, err := stack.Start(ctx, stack.Options{Log: &stack.StderrLogger{}, VaultStorage: cfg.storage, Dir: dir})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: FAILED to start the stack: %v\n", err)
		os.Exit(1)
	}
	res, err := run(ctx, s, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nbench: FAILED: %v\n", err)
		s.DumpLogs(30)
		s.Stop(true)
		os.Exit(1)
	}
	s.Stop(*keep)
	res.total = time.Since(started)
	res.print(os.Stdout, cfg)
	if res.problems() > 0 {
		os.Exit(1)
	}
}

// results is everything one run measured.
type results struct {
	rows        []*row
	prefix      []prefixResult
	pluginHWM   int // kB
	pluginPID   int
	pidChanged  bool
	procNames   []string
	total       time.Duration
	loadAtStart string
}

func run(ctx context.Context, s *stack.Stack, cfg config) (*results, error) {
	maxC := slices.Max(cfg.levels)
	vc, err := newVaultClient(s.Vault.Addr, s.Vault.RootToken, maxC+4)
	if err != nil {
		return nil, err
	}
	if cfg.logLevel != "" {
		if _, err := vc.Logical().WriteWithContext(ctx, "sys/loggers", map[string]any{"level": cfg.logLevel}); err != nil {
			return nil, fmt.Errorf("sys/loggers: %w", err)
		}
	}
	admin, err := s.Kube.AdminClient()
	if err != nil {
		return nil, err
	}
	vaultPID := s.Vault.Proc.Pid()
	pluginPID, err := findPlugin(vaultPID)
	if err != nil {
		return nil, err
	}
	res := &results{pluginPID: pluginPID, loadAtStart: loadavg()}
	p := procs{
		names: []string{"apiserver", "etcd", "vault", "plugin", "bench"},
		pids:  []int{s.Kube.Proc.Pid(), s.Etcd.Proc.Pid(), vaultPID, pluginPID, os.Getpid()},
	}
	res.procNames = p.names

	engines := map[string]*engine{}
	for _, name := range cfg.engines {
		switch name {
		case enginePlugin:
			engines[name] = vaultEngine(name, vc, stack.Mount+"/creds/"+stack.RoleName, nil, countSecrets(admin, stack.ManagedByLabel))
		case engineVaultRead:
			engines[name] = vaultReadEngine(vc)
		case engineBare:
			if engines[name], err = bareEngine(s, admin); err != nil {
				return nil, err
			}
		case engineBuiltinSA, engineBuiltinRole:
			if engines[engineBuiltinSA] == nil && engines[engineBuiltinRole] == nil {
				if err := setupBuiltin(ctx, s, vc); err != nil {
					return nil, err
				}
				s.Logf("bench: Vault's built-in kubernetes engine mounted at %s/", builtinMount)
			}
			role := map[string]string{engineBuiltinSA: "sa-mode", engineBuiltinRole: "role-mode"}[name]
			engines[name] = builtinEngine(name, role, vc, admin)
		}
	}

	for _, c := range cfg.levels {
		merged := map[string]*row{}
		for round := range cfg.rounds {
			for _, name := range cfg.engines {
				n := cfg.rounds
				if name == engineBuiltinSA || name == engineBuiltinRole {
					if round > 0 {
						continue
					}
					n = 1
				}
				r, err := runPhase(ctx, vc, engines[name], c, cfg.duration/time.Duration(n), round == 0, cfg, p, vaultPID)
				if err != nil {
					return nil, err
				}
				merged[name] = merged[name].merge(r)
			}
		}
		for _, name := range cfg.engines {
			res.rows = append(res.rows, merged[name])
		}
	}
	if e := engines[enginePlugin]; e != nil && cfg.prefixN > 0 {
		for _, sync := range []bool{true, false} {
			pr, err := measurePrefix(ctx, vc, e, maxC, cfg.prefixN, sync)
			if err != nil {
				return nil, err
			}
			res.prefix = append(res.prefix, pr)
		}
	}
	res.pluginHWM = memKB(pluginPID, "VmHWM")
	if now, err := findPlugin(vaultPID); err != nil || now != pluginPID {
		res.pidChanged = true
	}
	return res, nil
}

// row is one engine at one concurrency.
type row struct {
	engine    string
	clients   int
	issue     stats
	revoke    stats
	pluginRSS int // peak VmRSS during the phase, kB
	vaultRSS  int
	cpuIssue  cpuDelta
	cpuRevoke cpuDelta
	left      string // what was left after revoking ("" when clean)
	timers    string // Vault's telemetry for plugin phases
}

// merge adds another slice of the same engine and concurrency to r.
func (r *row) merge(o *row) *row {
	if r == nil {
		return o
	}
	r.issue, r.revoke = r.issue.merge(o.issue), r.revoke.merge(o.revoke)
	r.pluginRSS, r.vaultRSS = max(r.pluginRSS, o.pluginRSS), max(r.vaultRSS, o.vaultRSS)
	r.cpuIssue, r.cpuRevoke = r.cpuIssue.add(o.cpuIssue), r.cpuRevoke.add(o.cpuRevoke)
	if o.left != "" {
		r.left = o.left
	}
	if o.timers != "" {
		r.timers = o.timers
	}
	return r
}

// cpuDelta is the CPU each process used between two snapshots.
type cpuDelta struct {
	per  []time.Duration
	busy time.Duration // whole machine
	wall time.Duration
}

func (d cpuDelta) add(o cpuDelta) cpuDelta {
	per := make([]time.Duration, len(d.per))
	for i := range per {
		per[i] = d.per[i] + o.per[i]
	}
	return cpuDelta{per: per, busy: d.busy + o.busy, wall: d.wall + o.wall}
}

func delta(a, b cpuSnapshot) cpuDelta {
	d := cpuDelta{busy: b.busy - a.busy, wall: b.at.Sub(a.at)}
	for i := range a.per {
		d.per = append(d.per, b.per[i]-a.per[i])
	}
	return d
}

// runPhase (optionally) warms up, issues for dur with c clients, then
// revokes every lease one by one with c clients and checks nothing is left.
func runPhase(ctx context.Context, vc *vaultapi.Client, e *engine, c int, dur time.Duration, warm bool, cfg config, p procs, vaultPID int) (*row, error) {
	s := fmt.Sprintf("bench: %-12s %2d clients:", e.name, c)
	if n := max(cfg.warmup, c); warm && n > 0 {
		st, ids := issueN(ctx, c, n, e.issue)
		rst := forEach(ctx, c, ids, e.revoke)
		if st.errs+rst.errs > 0 {
			return nil, fmt.Errorf("%s warm-up: %d issue and %d revoke errors: %s%s", s, st.errs, rst.errs, st.firstErr, rst.firstErr)
		}
	}
	r := &row{engine: e.name, clients: c}
	rss := sampleRSS(100*time.Millisecond, p.pids[3], vaultPID)
	if cfg.profile != "" && e.name == enginePlugin {
		defer profileVault(ctx, vc, dur, fmt.Sprintf("%s/vault-plugin-%d.pprof", cfg.profile, c))()
	}
	cpu0 := p.snapshot()
	var ids []string
	r.issue, ids = issueFor(ctx, c, dur, e.issue)
	cpu1 := p.snapshot()
	if e.name == enginePlugin {
		if t, err := vaultTimers(ctx, vc); err != nil {
			r.timers = err.Error()
		} else {
			r.timers = storageLine(t)
		}
	}
	r.revoke = forEach(ctx, c, ids, e.revoke)
	cpu2 := p.snapshot()
	peaks := rss.Stop()
	r.pluginRSS, r.vaultRSS = peaks[0], peaks[1]
	r.cpuIssue, r.cpuRevoke = delta(cpu0, cpu1), delta(cpu1, cpu2)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	left, err := waitClean(ctx, vc, e)
	if err != nil {
		return nil, err
	}
	r.left = left
	fmt.Fprintf(os.Stderr, "%s %d creds %.1f/s p50 %s, %d revoked %.1f/s, %d errors%s\n", s,
		r.issue.ops, r.issue.rate(), ms(r.issue.pct(.5)), r.revoke.ops, r.revoke.rate(), r.issue.errs+r.revoke.errs, note(" LEFT: ", left))
	return r, nil
}

// waitClean polls leftovers for up to 30 s (Kubernetes deletes are
// synchronous, so it is normally clean at once).
func waitClean(ctx context.Context, vc *vaultapi.Client, e *engine) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := leftovers(ctx, vc, e)
		if err != nil || left == "" || time.Now().After(deadline) {
			return left, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// prefixResult is one revoke-prefix measurement.
type prefixResult struct {
	sync    bool
	leases  int
	elapsed time.Duration // until the call returned (sync) or nothing was left (async)
	errs    int
	left    string
}

// measurePrefix issues n plugin leases with c clients, then revokes them with
// one sys/leases/revoke-prefix call. sync=true is the API's default (Vault
// revokes them one after another before answering); sync=false is what
// `vault lease revoke -prefix` does (queued for Vault's revocation workers):
// that elapsed time runs until no lease and no bound Secret is left.
func measurePrefix(ctx context.Context, vc *vaultapi.Client, e *engine, c, n int, sync bool) (prefixResult, error) {
	st, ids := issueN(ctx, c, n, e.issue)
	pr := prefixResult{sync: sync, leases: len(ids), errs: st.errs}
	start := time.Now()
	err := vc.Sys().RevokeWithOptionsWithContext(ctx, &vaultapi.RevokeOptions{LeaseID: e.leasePrefix, Prefix: true, Sync: sync})
	if err != nil {
		pr.errs++
		fmt.Fprintf(os.Stderr, "bench: revoke-prefix: %v\n", err)
	}
	if sync {
		pr.elapsed = time.Since(start)
		pr.left, err = waitClean(ctx, vc, e)
		return pr, logPrefix(pr, err)
	}
	for {
		left, err := leftovers(ctx, vc, e)
		if err != nil {
			return pr, err
		}
		pr.elapsed, pr.left = time.Since(start), left
		if left == "" || pr.elapsed > 2*time.Minute {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return pr, logPrefix(pr, nil)
}

func logPrefix(pr prefixResult, err error) error {
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: revoke-prefix (sync=%t) of %d plugin leases: %s%s\n", pr.sync, pr.leases, pr.elapsed.Round(time.Millisecond), note(" LEFT: ", pr.left))
	return nil
}

func note(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// profileVault records Vault's CPU profile for about d in the background;
// the returned function waits for it.
func profileVault(ctx context.Context, vc *vaultapi.Client, d time.Duration, path string) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		secs := strconv.Itoa(max(1, int(d.Seconds())))
		resp, err := vc.Logical().ReadRawWithDataWithContext(ctx, "sys/pprof/profile", map[string][]string{"seconds": {secs}})
		if err == nil {
			defer resp.Body.Close()
			var b []byte
			if b, err = io.ReadAll(resp.Body); err == nil {
				err = os.WriteFile(path, b, 0o644)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: Vault profile: %v\n", err)
		}
	}()
	return func() { <-done }
}

// defaultDataParent is /dev/shm when it is a tmpfs, else TMPDIR ("").
func defaultDataParent() string {
	if fsType("/dev/shm") == "tmpfs" {
		return "/dev/shm"
	}
	return ""
}
