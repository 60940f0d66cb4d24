package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func mb(kb int) string {
	if kb == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kb)/1024)
}

// problems counts errors, leftovers and a restarted plugin: all must be zero.
func (res *results) problems() int {
	n := 0
	for _, r := range res.rows {
		n += r.issue.errs + r.revoke.errs
		if r.left != "" {
			n++
		}
	}
	for _, p := range res.prefix {
		n += p.errs
		if p.left != "" {
			n++
		}
	}
	if res.pidChanged {
		n++
	}
	return n
}

func (res *results) find(engine string, clients int) *row {
	for _, r := range res.rows {
		if r.engine == engine && r.clients == clients {
			return r
		}
	}
	return nil
}

func (res *results) print(w io.Writer, cfg config) {
	fmt.Fprintf(w, "\n== vault-plugin-scanner bench, %s, %d CPUs, load average at start %s\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), res.loadAtStart)
	fmt.Fprintf(w, "   clients %v; per engine and level %s of issuing in %d slice(s), engines taking turns, each slice followed by per-lease\n", cfg.levels, cfg.duration, cfg.rounds)
	fmt.Fprintf(w, "   sys/leases/revoke at the same concurrency and a check that nothing is left; Vault log level %q\n", cfg.logLevel)
	fmt.Fprintf(w, "   Vault storage %q; etcd's and Vault's data in %s (%s; -data-dir)\n", cfg.storage, cfg.dataDir, cfg.dataFS)
	fmt.Fprintf(w, "   (vault-read: creds are LISTs of scanner/roles/, no lease; RSS: peak VmRSS sampled every 100 ms during the phase)\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\tclients\tcreds\tcreds/s\tp50 ms\tp90 ms\tp99 ms\trevokes/s\trevoke p50 ms\terrors\tplugin RSS MB\tvault RSS MB\t")
	for _, r := range res.rows {
		revRate, revP50 := "-", "-"
		if r.revoke.ops > 0 {
			revRate, revP50 = fmt.Sprintf("%.1f", r.revoke.rate()), ms(r.revoke.pct(.5))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.engine, r.clients, r.issue.ops, r.issue.rate(),
			ms(r.issue.pct(.5)), ms(r.issue.pct(.9)), ms(r.issue.pct(.99)), revRate, revP50,
			r.issue.errs+r.revoke.errs, mb(r.pluginRSS), mb(r.vaultRSS), note("LEFT: ", r.left))
	}
	tw.Flush()
	for _, r := range res.rows {
		if r.issue.firstErr+r.revoke.firstErr != "" {
			fmt.Fprintf(w, "  first error, %s at %d clients: %s%s\n", r.engine, r.clients, r.issue.firstErr, r.revoke.firstErr)
		}
	}

	fmt.Fprintf(w, "\nCPU ms per operation of each process (issue: per credential, revoke: per revocation); busy and other %% of all %d CPUs\n\n", runtime.NumCPU())
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "engine\tclients\top\t%s\tsum\tbusy %%\tother %%\t\n", strings.Join(res.procNames, "\t"))
	for _, r := range res.rows {
		for _, op := range []struct {
			name string
			n    int
			d    cpuDelta
		}{{"issue", r.issue.ops, r.cpuIssue}, {"revoke", r.revoke.ops, r.cpuRevoke}} {
			if op.n == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t", r.engine, r.clients, op.name)
			var sum time.Duration
			for _, d := range op.d.per {
				sum += d
				fmt.Fprintf(tw, "%s\t", ms(d/time.Duration(op.n)))
			}
			capacity := float64(op.d.wall) * float64(runtime.NumCPU())
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t\n", ms(sum/time.Duration(op.n)), 100*float64(op.d.busy)/capacity, 100*float64(op.d.busy-sum)/capacity)
		}
	}
	tw.Flush()

	fmt.Fprintf(w, "\nVault's own timers per plugin credential (sys/metrics: the last finished 10 s interval at the end of the last plugin slice of each level)\n")
	for _, r := range res.rows {
		if r.timers != "" {
			fmt.Fprintf(w, "  %2d clients: %s\n", r.clients, r.timers)
		}
	}

	fmt.Fprintf(w, "\nRevoke-prefix of plugin leases (sys/leases/revoke-prefix/%s/creds/%s)\n", "scanner", "cluster-a")
	for _, p := range res.prefix {
		how := "sync=true (API default: Vault revokes one after another, then answers)"
		if !p.sync {
			how = "sync=false (`vault lease revoke -prefix`: queued; time until no lease and no Secret is left)"
		}
		fmt.Fprintf(w, "  %d leases, %s: %s = %.1f revocations/s, %d errors%s\n", p.leases, how,
			p.elapsed.Round(time.Millisecond), float64(p.leases)/p.elapsed.Seconds(), p.errs, note(", LEFT: ", p.left))
	}

	res.printTargets(w)
	fmt.Fprintf(w, "\nPlugin pid %d, VmHWM %s MB", res.pluginPID, mb(res.pluginHWM))
	if res.pidChanged {
		fmt.Fprint(w, " (the plugin process CHANGED during the run: it restarted)")
	}
	fmt.Fprintf(w, "; the whole run took %s.\n", res.total.Round(time.Second))
	if n := res.problems(); n > 0 {
		fmt.Fprintf(w, "PROBLEMS: %d (errors, leftovers or a plugin restart); see above.\n", n)
	}
}

// printTargets compares the run with the performance targets.
func (res *results) printTargets(w io.Writer) {
	fmt.Fprintf(w, "\nRatios and the performance targets\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "MISSED"
	}
	levels := []int{}
	for _, r := range res.rows {
		if r.engine == enginePlugin {
			levels = append(levels, r.clients)
		}
	}
	ratioLine := func(other, unit, target string, ok func(c int, x float64) bool) {
		var parts []string
		met := true
		checked := false
		for _, c := range levels {
			p, o := res.find(enginePlugin, c), res.find(other, c)
			if p == nil || o == nil || o.issue.rate() == 0 {
				continue
			}
			x := p.issue.rate() / o.issue.rate()
			if unit == "%" {
				parts = append(parts, fmt.Sprintf("%d clients %.1f%%", c, 100*x))
			} else {
				parts = append(parts, fmt.Sprintf("%d clients %.1fx", c, x))
			}
			if c == 8 || c == 32 {
				checked = true
				met = met && ok(c, x)
			}
		}
		if len(parts) == 0 {
			return
		}
		v := "n/a"
		if checked {
			v = verdict(met)
		}
		fmt.Fprintf(tw, "throughput plugin / %s\t%s\t%s\t%s\n", other, strings.Join(parts, ", "), target, v)
	}
	ratioLine(engineBare, "%", ">= 60% at 8 and 32", func(_ int, x float64) bool { return x >= 0.6 })
	ratioLine(engineBuiltinSA, "x", ">= 20x at 8 and 32", func(_ int, x float64) bool { return x >= 20 })
	ratioLine(engineBuiltinRole, "x", ">= 20x at 8 and 32", func(_ int, x float64) bool { return x >= 20 })

	if p, b := res.find(enginePlugin, 1), res.find(engineBare, 1); p != nil && b != nil {
		d := p.issue.pct(.5) - b.issue.pct(.5)
		floor := ""
		if v := res.find(engineVaultRead, 1); v != nil {
			floor = fmt.Sprintf(" (a bare Vault request through the plugin: %s ms)", ms(v.issue.pct(.5)))
		}
		fmt.Fprintf(tw, "p50 latency at 1 client\tplugin %s ms, bare %s ms: %+.1f ms%s\t<= +3 ms\t%s\n", ms(p.issue.pct(.5)), ms(b.issue.pct(.5)), float64(d)/1e6, floor, verdict(d <= 3*time.Millisecond))
	}
	if p := res.find(enginePlugin, 32); p != nil {
		line := fmt.Sprintf("per-lease %.0f/s", p.revoke.rate())
		ok := p.revoke.rate() >= 100 && p.left == ""
		for _, pr := range res.prefix {
			line += fmt.Sprintf(", prefix sync=%t %.0f/s", pr.sync, float64(pr.leases)/pr.elapsed.Seconds())
			ok = ok && pr.left == ""
		}
		if !ok {
			line += " (or leases left)"
		}
		fmt.Fprintf(tw, "revocations at 32 clients\t%s; 0 irrevocable checked after each phase\t>= 100/s, 0 irrevocable\t%s\n", line, verdict(ok))
	}
	if res.pluginHWM > 0 {
		fmt.Fprintf(tw, "plugin peak RSS\tVmHWM %s MB\t< 80 MB\t%s\n", mb(res.pluginHWM), verdict(res.pluginHWM < 80*1024))
	}
	fmt.Fprintf(tw, "errors, leftovers\t%d\t0\t%s\n", res.problems(), verdict(res.problems() == 0))
	tw.Flush()
}

// fsType names the filesystem holding dir: the stack's data on tmpfs or on
// a disk changes what every storage write costs.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown filesystem"
	}
	switch st.Type {
	case 0x01021994:
		return "tmpfs"
	case 0xEF53:
		return "ext4"
	case 0x9123683E:
		return "btrfs"
	case 0x58465342:
		return "xfs"
	case 0x794C7630:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem magic %#x", st.Type)
}
