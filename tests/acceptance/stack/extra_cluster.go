package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ExtraClusterDir is where StartExtraCluster keeps the cluster name: write
// files its flags name (an --authentication-config file, say) there first,
// so they sit with its logs.
func (s *Stack) ExtraClusterDir(name string) string {
	return filepath.Join(s.Dir, "extra-"+name)
}

// StartExtraCluster starts one more kube-apiserver, with the standard flags
// plus extraArgs, on the first cluster's etcd under its own key prefix
// (its own objects, serving CA, service-account key and admin token: a
// cluster of its own, without a second etcd). Nothing is applied in it.
// Start-up is bounded by ctx and the API server's 2-minute readiness wait;
// Stop stops it (StopExtraCluster sooner), and the stack's logs list its
// log files.
func (s *Stack) StartExtraCluster(ctx context.Context, name string, extraArgs ...string) (c *KubeCluster, err error) {
	dir := s.ExtraClusterDir(name)
	s.extraMu.Lock()
	_, taken := s.extra[name]
	if !taken {
		if s.extra == nil {
			s.extra = map[string]*KubeCluster{}
		}
		s.extra[name] = nil // reserved while starting
	}
	s.extraMu.Unlock()
	if taken {
		return nil, fmt.Errorf("extra cluster %q: already started", name)
	}
	defer func() {
		s.extraMu.Lock()
		if err != nil {
			delete(s.extra, name)
		} else {
			s.extra[name] = c
		}
		s.extraMu.Unlock()
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	t := time.Now()
	c = &KubeCluster{Name: "extra-" + name, Dir: dir, kubectl: s.Tools.Kubectl, home: dir}
	args := append([]string{"--etcd-prefix=/extra-" + name}, extraArgs...)
	if c.Kube, err = startKubeAPIServer(ctx, s.Tools.KubeAPIServer, filepath.Join(dir, "kube"), s.First.Etcd.ClientURL, args...); err != nil {
		return nil, fmt.Errorf("extra cluster %q: %w", name, err)
	}
	c.AdminKubeconfig = filepath.Join(dir, "kube", "admin.kubeconfig")
	if err = c.Kube.WriteKubeconfig(c.AdminKubeconfig, "admin", c.Kube.AdminToken, "default"); err != nil {
		c.Stop()
		return nil, err
	}
	s.log.Logf("stack: extra cluster %s: kube-apiserver ready at %s (%s)", name, c.Kube.URL, since(t))
	return c, nil
}

// StopExtraCluster stops the extra cluster's API server; its objects stay
// in etcd under its prefix and its logs stay listed until the stack stops,
// and the name is not reused. Unknown names are a no-op.
func (s *Stack) StopExtraCluster(name string) {
	s.extraMu.Lock()
	c := s.extra[name]
	s.extraMu.Unlock()
	c.Stop()
}

// extraClusters lists the extra clusters started (running or stopped).
func (s *Stack) extraClusters() []*KubeCluster {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	var out []*KubeCluster
	for _, c := range s.extra {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}
