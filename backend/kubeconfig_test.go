package backend

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	clientcmdapiv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

func TestBuildKubeconfig(t *testing.T) {
	params := kubeconfigParams{
		ClusterName: "prod", Server: "https://k8s.example.com:6443", CACert: testCAPEM(t),
		TLSServerName: "api.internal", UserName: "scanner-sa", Token: "header.payload.sig", Namespace: "team-a",
	}
	yamlOut, jsonOut, err := buildKubeconfig(params)
	if err != nil {
		t.Fatal(err)
	}
	for name, raw := range map[string]string{"yaml": yamlOut, "json": jsonOut} {
		t.Run(name, func(t *testing.T) {
			cfg, err := clientcmd.Load([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.CurrentContext != "prod" {
				t.Fatalf("current-context = %q", cfg.CurrentContext)
			}
			kctx := cfg.Contexts["prod"]
			cluster, user := cfg.Clusters[kctx.Cluster], cfg.AuthInfos[kctx.AuthInfo]
			if cluster.Server != params.Server || cluster.TLSServerName != "api.internal" || string(cluster.CertificateAuthorityData) != params.CACert {
				t.Errorf("cluster = %+v", cluster)
			}
			if user.Token != params.Token || kctx.Namespace != "team-a" || kctx.AuthInfo != "scanner-sa" {
				t.Errorf("user token or context wrong: %+v", kctx)
			}
			// The result must work with kubectl's own client builder.
			rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
			if err != nil {
				t.Fatal(err)
			}
			if rc.Host != params.Server || rc.BearerToken != params.Token || rc.Insecure {
				t.Errorf("rest config = host %s insecure %v", rc.Host, rc.Insecure)
			}
		})
	}
	var head struct{ APIVersion, Kind string }
	if err := json.Unmarshal([]byte(jsonOut), &head); err != nil || head.APIVersion != "v1" || head.Kind != "Config" {
		t.Errorf("JSON kubeconfig header = %+v, %v", head, err)
	}
	if strings.Contains(jsonOut, "\n") {
		t.Error("JSON kubeconfig is not a single line")
	}
}

func TestBuildKubeconfigWithoutCA(t *testing.T) {
	yamlOut, _, err := buildKubeconfig(kubeconfigParams{ClusterName: "c", Server: "https://k8s.example.com", UserName: "u", Token: "a.b.c", Namespace: "n"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load([]byte(yamlOut))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Clusters["c"]; len(c.CertificateAuthorityData) != 0 || c.InsecureSkipTLSVerify {
		t.Errorf("without a CA the kubeconfig must rely on system roots, got %+v", c)
	}
}

// The YAML is exactly what clientcmd.Write (kubectl's writer) produces for
// the same kubeconfig, and the JSON is the same document.
func TestBuildKubeconfigMatchesClientcmdWrite(t *testing.T) {
	cases := []kubeconfigParams{
		{ClusterName: "prod", Server: "https://k8s.example.com:6443", CACert: testCAPEM(t), TLSServerName: "api.internal", UserName: "scanner-sa", Token: "header.payload.sig", Namespace: "team-a"},
		{ClusterName: "c", Server: "https://10.0.0.1", UserName: "u", Token: "a.b.c", Namespace: "n"},
		{ClusterName: "odd: name", Server: "https://[::1]:6443", UserName: "yes", Token: "x.y.z", Namespace: "true"},
	}
	for _, p := range cases {
		t.Run(p.ClusterName, func(t *testing.T) {
			yamlOut, jsonOut, err := buildKubeconfig(p)
			if err != nil {
				t.Fatal(err)
			}
			user := clientcmdapi.NewAuthInfo()
			user.Token = p.Token
			assertWrittenAsClientcmd(t, p, user, yamlOut, jsonOut)
		})
	}
}

// An exec user comes out as clientcmd.Write writes it, with no token.
func TestBuildKubeconfigExecUserMatchesClientcmdWrite(t *testing.T) {
	p := kubeconfigParams{
		ClusterName: "prod", Server: "https://k8s.example.com:6443", CACert: testCAPEM(t), TLSServerName: "api.internal",
		UserName: "scanner/creds/prod", Namespace: "team-a",
		Exec: &clientcmdapiv1.ExecConfig{
			APIVersion: "client.authentication.k8s.io/v1", Command: "vault",
			Args:            []string{"read", "-format=table", "-field=exec_credential", "scanner/creds/prod", "ttl=10m0s"},
			InstallHint:     "install vault",
			InteractiveMode: clientcmdapiv1.NeverExecInteractiveMode,
		},
	}
	yamlOut, jsonOut, err := buildKubeconfig(p)
	if err != nil {
		t.Fatal(err)
	}
	user := clientcmdapi.NewAuthInfo()
	user.Exec = &clientcmdapi.ExecConfig{
		APIVersion: p.Exec.APIVersion, Command: "vault", Args: p.Exec.Args, InstallHint: "install vault",
		InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
	}
	assertWrittenAsClientcmd(t, p, user, yamlOut, jsonOut)
	if strings.Contains(yamlOut, "token") {
		t.Errorf("an exec user carries no token:\n%s", yamlOut)
	}
	if _, _, err := buildKubeconfig(kubeconfigParams{ClusterName: "c", Server: "https://k", UserName: "u", Token: "a.b.c", Exec: p.Exec}); err == nil {
		t.Error("a user with both a token and an exec plugin was built")
	}
	bad := *p.Exec
	bad.Args = []string{"read", "ttl=1m\nx"}
	if _, _, err := buildKubeconfig(kubeconfigParams{ClusterName: "c", Server: "https://k", UserName: "u", Exec: &bad}); err == nil {
		t.Error("an exec argument with a control character was built")
	}
}

// assertWrittenAsClientcmd checks that the YAML is byte for byte what
// clientcmd.Write produces for p's kubeconfig with user, and that the JSON
// is the same document.
func assertWrittenAsClientcmd(t *testing.T, p kubeconfigParams, user *clientcmdapi.AuthInfo, yamlOut, jsonOut string) {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cluster := clientcmdapi.NewCluster()
	cluster.Server, cluster.CertificateAuthorityData, cluster.TLSServerName = p.Server, []byte(p.CACert), p.TLSServerName
	cfg.Clusters[p.ClusterName] = cluster
	cfg.AuthInfos[p.UserName] = user
	kctx := clientcmdapi.NewContext()
	kctx.Cluster, kctx.AuthInfo, kctx.Namespace = p.ClusterName, p.UserName, p.Namespace
	cfg.Contexts[p.ClusterName] = kctx
	cfg.CurrentContext = p.ClusterName
	want, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	if yamlOut != string(want) {
		t.Errorf("YAML differs from clientcmd.Write:\n got: %s\nwant: %s", yamlOut, want)
	}
	if fromJSON, err := sigsyaml.JSONToYAML([]byte(jsonOut)); err != nil || string(fromJSON) != string(want) {
		t.Errorf("JSON is not the same document: %v\n%s", err, fromJSON)
	}
}

func BenchmarkBuildKubeconfig(b *testing.B) {
	params := kubeconfigParams{
		ClusterName: "cluster-a", Server: testHost, CACert: testCAPEM(b),
		UserName: testSA, Token: testRequesterJWT, Namespace: testNamespace,
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := buildKubeconfig(params); err != nil {
			b.Fatal(err)
		}
	}
}

func TestValidateExecCommand(t *testing.T) {
	cases := []struct {
		command   string
		allowPath bool
		want      string // "" means accepted
	}{
		{"vault", false, ""},
		{"bao", false, ""},
		{"vault", true, ""},
		{"/usr/local/bin/bao", true, ""},
		{"/opt/openbao-2.6/bin/bao", true, ""},
		{"/usr/bin/vault", false, "an absolute path can only be set by the cluster entry"},
		{"sh", false, `must be "vault" or "bao"`},
		{"sh", true, "clean absolute path"},
		{"/bin/sh", true, "clean absolute path"},
		{"Vault", true, "clean absolute path"},
		{"vault ", true, "clean absolute path"},
		{"bin/vault", true, "clean absolute path"},
		{"./vault", true, "clean absolute path"},
		{"/usr/bin/../../tmp/vault", true, "clean absolute path"},
		{"/usr/bin//vault", true, "clean absolute path"},
		{"/usr/bin/vault-wrapper", true, "clean absolute path"},
		{"/usr/bin/vault/", true, "clean absolute path"},
		{"/usr/bin/vault;rm", true, "clean absolute path"},
		{"/usr/bin/va ult", true, "clean absolute path"},
		{"/usr/bin/vault\n", true, "clean absolute path"},
		{"/tmp/vault", true, "must not point under /tmp/"},
		{"/var/tmp/x/bao", true, "must not point under /var/tmp/"},
		{"/dev/shm/vault", true, "must not point under /dev/shm/"},
		{"/" + strings.Repeat("a/", 200) + "vault", true, "at most 256"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q path=%v", tc.command, tc.allowPath), func(t *testing.T) {
			err := validateExecCommand("exec_command", tc.command, tc.allowPath)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestExecCLIEnvFor(t *testing.T) {
	vaultEnv := execCLIEnv{cli: "vault", addr: "VAULT_ADDR", token: "VAULT_TOKEN", namespace: []string{"VAULT_NAMESPACE"}}
	baoEnv := execCLIEnv{cli: "bao", addr: "BAO_ADDR", token: "BAO_TOKEN", namespace: []string{"BAO_NAMESPACE", "VAULT_NAMESPACE"}}
	cases := []struct {
		command string
		want    execCLIEnv
	}{
		{"vault", vaultEnv},
		{"/usr/local/bin/vault", vaultEnv},
		{"bao", baoEnv},
		{"/opt/openbao/bin/bao", baoEnv},
	}
	for _, tc := range cases {
		t.Run(tc.command, func(t *testing.T) {
			got := execCLIEnvFor(tc.command)
			if got.cli != tc.want.cli || got.addr != tc.want.addr || got.token != tc.want.token || !slices.Equal(got.namespace, tc.want.namespace) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			env := got.namespaceEnv("team")
			if len(env) != len(tc.want.namespace) {
				t.Fatalf("namespaceEnv = %+v", env)
			}
			for i, v := range env {
				if v.Name != tc.want.namespace[i] || v.Value != "team" {
					t.Errorf("namespaceEnv[%d] = %+v", i, v)
				}
			}
		})
	}
}

// An exec user's environment is checked like its command and arguments.
func TestBuildKubeconfigRefusesControlCharactersInExecEnv(t *testing.T) {
	_, _, err := buildKubeconfig(kubeconfigParams{
		ClusterName: "c", Server: "https://k8s.example.com", UserName: "u",
		Exec: &clientcmdapiv1.ExecConfig{Command: "vault", Env: []clientcmdapiv1.ExecEnvVar{{Name: "VAULT_NAMESPACE", Value: "a\nb"}}},
	})
	if err == nil || !strings.Contains(err.Error(), "control characters") {
		t.Fatalf("err = %v, want a refusal of control characters", err)
	}
}

// Whatever a caller or a clusters/ writer sends, an accepted command is
// vault or bao: bare, or (from a cluster entry) a clean absolute path
// ending in one of them, outside the world-writable directories.
func FuzzValidateExecCommand(f *testing.F) {
	for _, seed := range []string{"vault", "bao", "/usr/local/bin/bao", "/tmp/vault", "/bin/sh", "/a/../vault", "vault\x00", "/usr/bin/vault/"} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, command string, allowPath bool) {
		if validateExecCommand("exec_command", command, allowPath) != nil {
			return
		}
		if command == "vault" || command == "bao" {
			return
		}
		base := command[strings.LastIndex(command, "/")+1:]
		switch {
		case !allowPath:
			t.Fatalf("a request's %q was accepted", command)
		case base != "vault" && base != "bao", !strings.HasPrefix(command, "/"), strings.Contains(command, "/../"), strings.Contains(command, "//"), strings.HasSuffix(command, "/."):
			t.Fatalf("%q was accepted", command)
		case strings.HasPrefix(command, "/tmp/"), strings.HasPrefix(command, "/var/tmp/"), strings.HasPrefix(command, "/dev/shm/"):
			t.Fatalf("%q under a world-writable directory was accepted", command)
		case strings.ContainsFunc(command, func(r rune) bool { return r <= ' ' || r > '~' }):
			t.Fatalf("%q with a control or non-ASCII character was accepted", command)
		}
	})
}
