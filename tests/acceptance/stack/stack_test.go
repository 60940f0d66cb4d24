package stack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPKIServingCertVerifies(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.CertPool, DNSName: host}); err != nil {
			t.Errorf("serving cert for %s: %v", host, err)
		}
	}
	b, err := os.ReadFile(p.SAKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(b); blk == nil || blk.Type != "RSA PRIVATE KEY" {
		t.Fatalf("SA key is not an RSA PEM key")
	}
	for _, f := range []string{p.KeyFile, p.SAKeyFile} {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", f, fi.Mode().Perm())
		}
	}
}

func TestProcessStopKillsTheGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// The shell starts a child that ignores SIGTERM; Stop must kill it too.
	p, err := StartProcess("sh", filepath.Join(dir, "log"), nil, "/bin/sh", "-c",
		`(trap "" TERM; sleep 300) & echo $! > `+pidFile+`; echo started; wait`)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	if _, err := Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(pidFile)
		if err != nil || len(strings.TrimSpace(string(b))) == 0 {
			return false, nil
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Stop(500 * time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s", d)
	}
	if exited, _ := p.Exited(); !exited {
		t.Errorf("process not exited after Stop")
	}
	if _, err := Poll(context.Background(), 5*time.Second, 50*time.Millisecond, func() (bool, error) {
		return syscall.Kill(child, 0) == syscall.ESRCH || isZombie(child), nil
	}); err != nil {
		t.Errorf("child %d survived Stop", child)
	}
	if !strings.Contains(p.Tail(5), "started") {
		t.Errorf("log tail %q lacks the output", p.Tail(5))
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

func TestRunReportsExitCode(t *testing.T) {
	res, err := Run(context.Background(), nil, "in", "/bin/sh", "-c", "cat; echo err >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || res.Stdout != "in" || res.Stderr != "err\n" {
		t.Fatalf("got %+v", res)
	}
}

func TestFreePortsDiffer(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 20; i++ {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
