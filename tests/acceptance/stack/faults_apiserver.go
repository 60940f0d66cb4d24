package stack

import (
	"context"
	"fmt"
	"time"
)

// StopAPIServer stops the kube-apiserver (SIGTERM, SIGKILL after grace)
// and waits until its port refuses connections. etcd keeps running, so
// StartAPIServer brings back the same cluster state.
func (k *KubeAPIServer) StopAPIServer(ctx context.Context) error {
	if k.Proc == nil {
		return fmt.Errorf("kube-apiserver is not running")
	}
	if err := k.Proc.Stop(20 * time.Second); err != nil {
		return err
	}
	_, err := Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		_, _, err := k.Get(ctx, "/readyz", k.AdminToken)
		return err != nil, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver still answers after stop: %w", err)
	}
	return nil
}

// StartAPIServer starts the kube-apiserver again with exactly the flags
// (and so the port, certificates, signing key and tokens) it had, and
// waits until /readyz answers 200. It returns how long that took.
func (k *KubeAPIServer) StartAPIServer(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if k.Proc == nil || k.Proc.cmd == nil {
		return 0, fmt.Errorf("kube-apiserver was never started")
	}
	if exited, _ := k.Proc.Exited(); !exited {
		return 0, fmt.Errorf("kube-apiserver is still running (pid %d)", k.Proc.Pid())
	}
	bin, args := k.Proc.cmd.Path, k.Proc.cmd.Args[1:]
	p, err := StartProcess(k.Proc.Name, k.Proc.LogPath, nil, bin, args...)
	if err != nil {
		return time.Since(start), err
	}
	k.Proc = p
	if err := k.waitReady(ctx, 250*time.Millisecond); err != nil {
		return time.Since(start), fmt.Errorf("kube-apiserver not ready after restart: %w\n%s", err, p.Tail(40))
	}
	return time.Since(start), nil
}
