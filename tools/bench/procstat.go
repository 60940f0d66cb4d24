package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// findPlugin returns the pid of the child of vaultPID running
// vault-plugin-scanner (the multiplexed plugin process).
func findPlugin(vaultPID int) (int, error) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		st, err := procStatus(pid)
		if err != nil || st["PPid"] != strconv.Itoa(vaultPID) {
			continue
		}
		if exe, err := os.Readlink(d + "/exe"); err == nil && filepath.Base(exe) == "vault-plugin-scanner" {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no vault-plugin-scanner child of vault (pid %d)", vaultPID)
}

// procStatus parses /proc/<pid>/status into key → first field.
func procStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if f := strings.Fields(v); ok && len(f) > 0 {
			out[k] = f[0]
		}
	}
	return out, nil
}

// memKB reads VmRSS or VmHWM (kB) of a process; 0 if unknown.
func memKB(pid int, key string) int {
	st, err := procStatus(pid)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(st[key])
	return n
}

// cpuTime is the user+system CPU time a process has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// machineBusy is the CPU time all CPUs spent busy (not idle or iowait).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 7 { // not idle, iowait, steal; guest time is already in user
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// procs are the processes whose CPU and memory a phase records.
type procs struct {
	names []string
	pids  []int
}

// cpuSnapshot is the CPU time of each process plus the machine's busy time.
type cpuSnapshot struct {
	per  []time.Duration
	busy time.Duration
	at   time.Time
}

func (p procs) snapshot() cpuSnapshot {
	s := cpuSnapshot{busy: machineBusy(), at: time.Now()}
	for _, pid := range p.pids {
		s.per = append(s.per, cpuTime(pid))
	}
	return s
}

// rssSampler records the peak VmRSS of some processes every interval.
type rssSampler struct {
	pids []int
	mu   sync.Mutex
	peak []int // kB
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(interval time.Duration, pids ...int) *rssSampler {
	r := &rssSampler{pids: pids, peak: make([]int, len(pids)), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			r.sample()
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
	return r
}

func (r *rssSampler) sample() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, pid := range r.pids {
		if kb := memKB(pid, "VmRSS"); kb > r.peak[i] {
			r.peak[i] = kb
		}
	}
}

// Stop ends sampling and returns the peaks in kB, in pid order.
func (r *rssSampler) Stop() []int {
	close(r.stop)
	<-r.done
	r.sample()
	return r.peak
}
