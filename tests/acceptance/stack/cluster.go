package stack

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KubeCluster is one Kubernetes control plane on loopback: its own etcd and
// kube-apiserver, with its own serving CA and service-account signing key
// (a token of one cluster is rejected by any other), an admin kubeconfig
// and, once set up, the shipped deploy/ manifests and a token-requester JWT.
type KubeCluster struct {
	Name string // "first" or "second": log and directory names
	Dir  string

	Etcd *Etcd
	Kube *KubeAPIServer

	// AdminKubeconfig is a kubeconfig file for the admin token.
	AdminKubeconfig string
	// TokenRequesterJWT is the plugin's credential in this cluster
	// (`kubectl create token vault-plugin-scanner`), set by setup.
	TokenRequesterJWT string

	kubectl string // kubectl binary
	home    string // HOME for kubectl
}

// startCluster starts etcd and kube-apiserver under dir (etcd/, kube/) and
// writes the admin kubeconfig. On error whatever started is stopped.
func startCluster(ctx context.Context, log Logger, tools Tools, name, dir string) (c *KubeCluster, err error) {
	c = &KubeCluster{Name: name, Dir: dir, kubectl: tools.Kubectl, home: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	t := time.Now()
	if c.Etcd, err = startEtcd(ctx, tools.Etcd, filepath.Join(dir, "etcd")); err != nil {
		return c, err
	}
	log.Logf("stack: %s cluster: etcd ready at %s (%s)", name, c.Etcd.ClientURL, since(t))

	t = time.Now()
	if c.Kube, err = startKubeAPIServer(ctx, tools.KubeAPIServer, filepath.Join(dir, "kube"), c.Etcd.ClientURL); err != nil {
		return c, err
	}
	c.AdminKubeconfig = filepath.Join(dir, "kube", "admin.kubeconfig")
	if err = c.Kube.WriteKubeconfig(c.AdminKubeconfig, "admin", c.Kube.AdminToken, "default"); err != nil {
		return c, err
	}
	log.Logf("stack: %s cluster: kube-apiserver ready at %s (%s)", name, c.Kube.URL, since(t))
	return c, nil
}

// setup applies the manifests and creates the token-requester JWT.
func (c *KubeCluster) setup(ctx context.Context, manifests []string) error {
	if err := c.ApplyManifests(ctx, manifests); err != nil {
		return err
	}
	jwt, err := c.CreateToken(ctx, RequesterNamespace, RequesterSA, 24*time.Hour)
	if err != nil {
		return err
	}
	c.TokenRequesterJWT = jwt
	return nil
}

// URL is the API server's https:// address.
func (c *KubeCluster) URL() string { return c.Kube.URL }

// CAPEM is the API server's serving CA (PEM).
func (c *KubeCluster) CAPEM() []byte { return c.Kube.PKI.CAPEM }

// CAFile is the path of the serving CA's PEM file.
func (c *KubeCluster) CAFile() string { return c.Kube.PKI.CAFile }

// Stop stops kube-apiserver, then etcd. It is idempotent.
func (c *KubeCluster) Stop() {
	if c == nil {
		return
	}
	if c.Kube != nil && c.Kube.Proc != nil {
		c.Kube.Proc.Stop(10 * time.Second)
	}
	if c.Etcd != nil && c.Etcd.Proc != nil {
		c.Etcd.Proc.Stop(10 * time.Second)
	}
}

// LogFiles lists the cluster's log files (those that exist).
func (c *KubeCluster) LogFiles() []string {
	var out []string
	for _, p := range []string{
		filepath.Join(c.Dir, "etcd", "etcd.log"),
		filepath.Join(c.Dir, "kube", "kube-apiserver.log"),
		filepath.Join(c.Dir, "kube", "audit.log"),
	} {
		if fileExists(p) {
			out = append(out, p)
		}
	}
	return out
}

// Kubectl runs kubectl with the given kubeconfig file.
func (c *KubeCluster) Kubectl(ctx context.Context, kubeconfig string, args ...string) (CmdResult, error) {
	return Run(ctx, []string{"KUBECONFIG=" + kubeconfig, "HOME=" + c.home}, "", c.kubectl, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
}

// KubectlAdmin runs kubectl as the cluster admin.
func (c *KubeCluster) KubectlAdmin(ctx context.Context, args ...string) (CmdResult, error) {
	return c.Kubectl(ctx, c.AdminKubeconfig, args...)
}

// ApplyManifests runs `kubectl apply -f` on each path, in order.
func (c *KubeCluster) ApplyManifests(ctx context.Context, paths []string) error {
	for _, p := range paths {
		res, err := c.KubectlAdmin(ctx, "apply", "-f", p)
		if err := cmdErr(c.Name+" cluster: kubectl apply -f "+p, res, err); err != nil {
			return err
		}
	}
	return nil
}

// CreateToken runs `kubectl create token <sa> -n <ns>` as admin.
func (c *KubeCluster) CreateToken(ctx context.Context, ns, sa string, d time.Duration) (string, error) {
	res, err := c.KubectlAdmin(ctx, "create", "token", sa, "-n", ns, fmt.Sprintf("--duration=%s", d))
	if err := cmdErr(c.Name+" cluster: kubectl create token "+sa, res, err); err != nil {
		return "", err
	}
	return strings.TrimSpace(res.Stdout), nil
}

// ManagedSecrets lists the plugin's bound Secrets in namespace; with role
// != "" only those annotated with that role.
func (c *KubeCluster) ManagedSecrets(ctx context.Context, namespace, role string) ([]corev1.Secret, error) {
	cs, err := c.Kube.AdminClient()
	if err != nil {
		return nil, err
	}
	list, err := cs.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{LabelSelector: ManagedByLabel})
	if err != nil {
		return nil, fmt.Errorf("%s cluster: list secrets -n %s: %w", c.Name, namespace, err)
	}
	var out []corev1.Secret
	for _, sec := range list.Items {
		if role == "" || sec.Annotations[RoleAnnotation] == role {
			out = append(out, sec)
		}
	}
	return out, nil
}

// TokenStatus returns the HTTP status of listing pods in namespace with
// token: 200 while valid, 401 once rejected, 403 if valid but not allowed.
func (c *KubeCluster) TokenStatus(ctx context.Context, namespace, token string) (int, error) {
	code, _, err := c.Kube.Get(ctx, "/api/v1/namespaces/"+namespace+"/pods", token)
	return code, err
}
