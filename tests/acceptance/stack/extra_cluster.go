package stack

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// NewExtraCluster prepares one more cluster named name: a kube-apiserver
// that will run on the first cluster's etcd under its own key prefix, with
// its own serving CA, service-account key and admin token (a cluster of its
// own, without a second etcd). Nothing runs yet, but its URL, CA and Dir are
// known: write the files its flags will name (an --authentication-config
// file, say) into Dir, next to its logs, then StartExtraCluster. Stop stops
// it and the stack's logs list its files.
func (s *Stack) NewExtraCluster(name string) (*KubeCluster, error) {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	if _, taken := s.extra[name]; taken {
		return nil, fmt.Errorf("extra cluster %q: name already used", name)
	}
	dir := filepath.Join(s.Dir, "extra-"+name)
	c := &KubeCluster{Name: "extra-" + name, Dir: dir, kubectl: s.Tools.Kubectl, home: dir}
	var err error
	if c.Kube, err = newKubeAPIServer(filepath.Join(dir, "kube")); err != nil {
		return nil, fmt.Errorf("extra cluster %q: %w", name, err)
	}
	c.AdminKubeconfig = filepath.Join(dir, "kube", "admin.kubeconfig")
	if err := c.Kube.WriteKubeconfig(c.AdminKubeconfig, "admin", c.Kube.AdminToken, "default"); err != nil {
		return nil, err
	}
	if s.extra == nil {
		s.extra = map[string]*KubeCluster{}
	}
	s.extra[name] = c
	return c, nil
}

// StartExtraCluster starts c's kube-apiserver with the standard flags plus
// extraArgs and waits until /readyz answers (bounded by ctx and the
// 2-minute readiness wait). Nothing is applied in it.
func (s *Stack) StartExtraCluster(ctx context.Context, c *KubeCluster, extraArgs ...string) error {
	t := time.Now()
	args := append([]string{"--etcd-prefix=/" + c.Name}, extraArgs...)
	if err := c.Kube.start(ctx, s.Tools.KubeAPIServer, s.First.Etcd.ClientURL, args...); err != nil {
		return fmt.Errorf("%s cluster: %w", c.Name, err)
	}
	s.log.Logf("stack: %s cluster: kube-apiserver ready at %s (%s)", c.Name, c.Kube.URL, since(t))
	return nil
}

// extraClusters lists the extra clusters prepared (running or not).
func (s *Stack) extraClusters() []*KubeCluster {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	var out []*KubeCluster
	for _, c := range s.extra {
		out = append(out, c)
	}
	return out
}
