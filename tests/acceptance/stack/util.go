package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Logger is satisfied by *testing.T and by StderrLogger.
type Logger interface {
	Logf(format string, args ...any)
}

// StderrLogger prints timestamped lines (seconds since start) to stderr.
type StderrLogger struct {
	Prefix string
	start  time.Time
	once   sync.Once
}

func (l *StderrLogger) Logf(format string, args ...any) {
	l.once.Do(func() { l.start = time.Now() })
	fmt.Fprintf(os.Stderr, "%s[%6.1fs] %s\n", l.Prefix, time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
}

var (
	portMu    sync.Mutex
	usedPorts = map[int]bool{}
)

// FreePort returns a free TCP port on 127.0.0.1 not handed out before by
// this process.
func FreePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !usedPorts[port] {
			usedPorts[port] = true
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port found")
}

// permanentError stops Poll at once.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps an error so that Poll stops at once and returns it.
func Permanent(err error) error { return permanentError{err} }

// Poll calls f every interval until it returns true or timeout passes; errors
// from f are retried (the last one is reported on timeout) unless wrapped
// with Permanent. It returns how long it took.
func Poll(ctx context.Context, timeout, interval time.Duration, f func() (bool, error)) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	var lastErr error
	for {
		ok, err := f()
		if err != nil {
			var perm permanentError
			if errors.As(err, &perm) {
				return time.Since(start), perm.err
			}
			lastErr = err
		}
		if ok {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return time.Since(start), fmt.Errorf("timed out after %s: last error: %w", timeout, lastErr)
			}
			return time.Since(start), fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(interval):
		}
	}
}

// CLISecret is what `vault read -format=json` prints for a leased secret.
type CLISecret struct {
	LeaseID       string            `json:"lease_id"`
	LeaseDuration int               `json:"lease_duration"`
	Renewable     bool              `json:"renewable"`
	Data          map[string]string `json:"data"`
}

// ParseCLISecret parses `vault read -format=json` output.
func ParseCLISecret(stdout string) (CLISecret, error) {
	var sec CLISecret
	if err := json.Unmarshal([]byte(stdout), &sec); err != nil {
		return sec, fmt.Errorf("parse vault read output: %w", err)
	}
	return sec, nil
}
