package acceptance

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// clusterAnnotation is the bound Secret's annotation naming its clusters/
// entry.
const clusterAnnotation = "vault-plugin-scanner/cluster"

// secondCluster returns the stack's second cluster, starting it on the
// first call in this test binary (later callers wait for that start).
func secondCluster(t *testing.T) *stack.KubeCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := st.StartSecond(ctx)
	if err != nil {
		t.Fatalf("starting the second cluster: %v", err)
	}
	t.Logf("second cluster at %s (waited %s)", c.URL(), secs(time.Since(start)))
	return c
}

// clusterArgs are the `vault write clusters/<name>` arguments that point
// at c with c's token-requester JWT.
func clusterArgs(c *stack.KubeCluster) []string {
	return []string{"kubernetes_host=" + c.URL(), "kubernetes_ca_cert=@" + c.CAFile(), "service_account_jwt=" + c.TokenRequesterJWT}
}

// writeClusterEntry runs `vault write scanner/clusters/<name> args...` and
// deletes the entry when the test ends (register it before the roles that
// use it, so they are deleted first).
func writeClusterEntry(t *testing.T, name string, args ...string) {
	t.Helper()
	mustVault(t, append([]string{"write", stack.Mount + "/clusters/" + name}, args...)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.Vault.CLI(ctx, "delete", stack.Mount+"/clusters/"+name); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: delete cluster %s: %v %s", name, err, res)
		}
	})
}

// writeRoleOnCluster writes a role for scanner-sa in scanner-namespace on
// the clusters/ entry cluster and deletes it when the test ends.
func writeRoleOnCluster(t *testing.T, name, cluster string, extra ...string) {
	t.Helper()
	if err := st.WriteRoleOn(testCtx(t, time.Minute), name, cluster, extra...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.Vault.CLI(ctx, "delete", stack.Mount+"/roles/"+name); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: delete role %s: %v %s", name, err, res)
		}
	})
}

// readClusterEntry GETs scanner/clusters/<name> over HTTP (200 required)
// and returns its data.
func readClusterEntry(t *testing.T, name string) map[string]any {
	t.Helper()
	code, vr := rawVault(t, http.MethodGet, stack.Mount+"/clusters/"+name, nil)
	if code != http.StatusOK || vr.Data == nil {
		t.Fatalf("GET %s/clusters/%s: HTTP %d %v, want 200 with data", stack.Mount, name, code, vr.Errors)
	}
	return vr.Data
}

// clusterSecrets lists the bound Secrets in c's scanner-namespace annotated
// with clusters/ entry cluster.
func clusterSecrets(t *testing.T, c *stack.KubeCluster, cluster string) []string {
	t.Helper()
	secs, err := c.ManagedSecrets(testCtx(t, 30*time.Second), stack.ScannerNamespace, "")
	if err != nil {
		t.Fatalf("%s cluster: %v", c.Name, err)
	}
	var out []string
	for _, s := range secs {
		if s.Annotations[clusterAnnotation] == cluster {
			out = append(out, s.Name)
		}
	}
	return out
}

// waitClusterSecrets polls until c holds exactly n bound Secrets of the
// clusters/ entry cluster.
func waitClusterSecrets(t *testing.T, c *stack.KubeCluster, cluster string, n int, timeout time.Duration) {
	t.Helper()
	var got []string
	_, err := stack.Poll(testCtx(t, timeout+30*time.Second), timeout, 250*time.Millisecond, func() (bool, error) {
		got = clusterSecrets(t, c, cluster)
		return len(got) == n, nil
	})
	if err != nil {
		t.Fatalf("%s cluster: bound Secrets of clusters/%s: %v, want %d: %v", c.Name, cluster, got, n, err)
	}
}

// waitStatusOn polls listing pods in scanner-namespace on c with token
// until it answers want, within timeout of from; it returns the time from
// `from` until then.
func waitStatusOn(t *testing.T, c *stack.KubeCluster, token string, want int, timeout time.Duration, from time.Time) time.Duration {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	last := 0
	_, err := stack.Poll(ctx, time.Until(from.Add(timeout)), 250*time.Millisecond, func() (bool, error) {
		code, err := c.TokenStatus(ctx, stack.ScannerNamespace, token)
		last = code
		return code == want, err
	})
	if err != nil {
		t.Fatalf("%s cluster: the token never got HTTP %d within %s (last %d): %v", c.Name, want, timeout, last, err)
	}
	return time.Since(from)
}

func statusOn(t *testing.T, c *stack.KubeCluster, token string) int {
	t.Helper()
	code, err := c.TokenStatus(testCtx(t, 30*time.Second), stack.ScannerNamespace, token)
	if err != nil {
		t.Fatalf("%s cluster: GET pods with token: %v", c.Name, err)
	}
	return code
}

// cleanupLeftovers, registered first (so it runs last), force-revokes what
// is left under prefix and deletes the clusters/ entry's bound Secrets from
// each cluster when the test failed, so a plugin that strands a lease or a
// Secret fails this test only, not the suite's final check.
func cleanupLeftovers(t *testing.T, prefix, cluster string, clusters ...*stack.KubeCluster) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if res, err := st.Vault.CLI(ctx, "lease", "revoke", "-force", "-prefix", prefix); err != nil || res.ExitCode != 0 {
			t.Logf("cleanup: revoke -force -prefix %s: %v %s", prefix, err, res)
		}
		for _, c := range clusters {
			cs, err := c.Kube.AdminClient()
			if err != nil {
				t.Logf("cleanup: %v", err)
				continue
			}
			secs, err := c.ManagedSecrets(ctx, stack.ScannerNamespace, "")
			if err != nil {
				t.Logf("cleanup: %v", err)
				continue
			}
			for _, s := range secs {
				if s.Annotations[clusterAnnotation] != cluster {
					continue
				}
				t.Logf("cleanup: %s cluster: deleting the stranded Secret %s of clusters/%s", c.Name, s.Name, cluster)
				if err := cs.CoreV1().Secrets(stack.ScannerNamespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
					t.Logf("cleanup: %v", err)
				}
			}
		}
	})
}

// assertNoJWTIn fails if text holds any of the JWTs or anything that looks
// like a JWT.
func assertNoJWTIn(t *testing.T, what, text string, jwts ...string) {
	t.Helper()
	for _, j := range jwts {
		if j != "" && strings.Contains(text, j) {
			t.Errorf("LEAK: %s contains the token requester JWT", what)
		}
	}
	if m := jwtHeaderRE.FindString(text); m != "" {
		t.Errorf("LEAK: %s contains a JWT (%.24s...)", what, m)
	}
}

// recordingListener is a TLS server on loopback (httptest's certificate,
// valid for 127.0.0.1) that records every request it gets and answers 200
// with a fake body. It also acts as an HTTPS proxy: a CONNECT is answered
// 200 and the tunnel is TLS-terminated with the same certificate, so a
// client that trusts the listener's CA sends it the requests (and
// Authorization headers) meant for the target.
type recordingListener struct {
	srv   *httptest.Server
	mu    sync.Mutex
	reqs  []recordedRequest
	conns []net.Conn
}

type recordedRequest struct {
	Method, Host, Path string
	Header             http.Header
	Body               string
	Tunnelled          bool
}

const recorderBody = `{"kind":"Status","apiVersion":"v1","status":"Success","gitVersion":"v0.0.0-recording-listener"}`

func newRecordingListener(t *testing.T) *recordingListener {
	t.Helper()
	r := &recordingListener{}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused TLS handshakes are expected
	r.srv.StartTLS()
	t.Cleanup(func() {
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.srv.CloseClientConnections()
		r.srv.Close()
	})
	return r
}

func (r *recordingListener) record(req *http.Request, tunnelled bool) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, recordedRequest{Method: req.Method, Host: req.Host, Path: req.URL.Path,
		Header: req.Header.Clone(), Body: string(body), Tunnelled: tunnelled})
}

func (r *recordingListener) serve(w http.ResponseWriter, req *http.Request) {
	r.record(req, false)
	if req.Method != http.MethodConnect {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, recorderBody)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "no hijacking", http.StatusInternalServerError)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	r.mu.Lock()
	r.conns = append(r.conns, conn)
	r.mu.Unlock()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	tc := tls.Server(conn, &tls.Config{Certificates: r.srv.TLS.Certificates, NextProtos: []string{"http/1.1"}})
	br := bufio.NewReader(tc)
	for {
		in, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		r.record(in, true)
		resp := &http.Response{StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Type": {"application/json"}},
			Body:          io.NopCloser(strings.NewReader(recorderBody)),
			ContentLength: int64(len(recorderBody))}
		if err := resp.Write(tc); err != nil {
			return
		}
	}
}

// URL is https://127.0.0.1:PORT.
func (r *recordingListener) URL() string { return r.srv.URL }

// caPEM is the PEM of the listener's (self-signed) certificate.
func (r *recordingListener) caPEM() string { return certPEM(r.srv.Certificate().Raw) }

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// requests returns a copy of what the listener recorded so far.
func (r *recordingListener) requests() []recordedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedRequest(nil), r.reqs...)
}

// carrying returns the recorded requests with secret in a header or body.
func (r *recordingListener) carrying(secret string) []recordedRequest {
	var out []recordedRequest
	for _, q := range r.requests() {
		hit := strings.Contains(q.Body, secret) || strings.Contains(q.Path, secret)
		for _, vs := range q.Header {
			for _, v := range vs {
				hit = hit || strings.Contains(v, secret)
			}
		}
		if hit {
			out = append(out, q)
		}
	}
	return out
}

// hangingListener is a TLS server on loopback that reads each request and
// never answers it (until the client gives up or the test ends).
func newHangingListener(t *testing.T) *httptest.Server {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(func() {
		close(stop)
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// closedPort returns a loopback port nothing listens on (handed out by
// stack.FreePort, so no other part of the suite binds it).
func closedPort(t *testing.T) int {
	t.Helper()
	p, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// writePEM writes a PEM string to a file in the test's temp dir.
func writePEM(t *testing.T, name, pemText string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(pemText), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
