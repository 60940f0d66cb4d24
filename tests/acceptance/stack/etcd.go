package stack

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"
)

// Etcd is a single-member etcd on loopback.
type Etcd struct {
	ClientURL string
	Dir       string
	Proc      *Process
}

func startEtcd(ctx context.Context, bin, dir string) (*Etcd, error) {
	cport, err := FreePort()
	if err != nil {
		return nil, err
	}
	pport, err := FreePort()
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cport)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	e := &Etcd{ClientURL: client, Dir: dir}
	e.Proc, err = StartProcess("etcd", filepath.Join(dir, "etcd.log"), nil, bin,
		"--name=default",
		"--data-dir="+filepath.Join(dir, "data"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=default="+peer,
		"--initial-cluster-state=new",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	_, err = Poll(ctx, 60*time.Second, 200*time.Millisecond, func() (bool, error) {
		if exited, werr := e.Proc.Exited(); exited {
			return false, Permanent(fmt.Errorf("etcd exited: %v", werr))
		}
		resp, err := http.Get(client + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		e.Proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("etcd not healthy: %w\n%s", err, e.Proc.Tail(30))
	}
	return e, nil
}
