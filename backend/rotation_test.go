package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

const (
	pluginNamespace = "vault-plugin-scanner"
	pluginSA        = "vault-plugin-scanner"
	pluginUser      = "system:serviceaccount:" + pluginNamespace + ":" + pluginSA
)

// authKube is the fake API server seen through one bearer token: every call
// fails with 401 once the token is dead (its bound Secret deleted or
// replaced, or its exp passed), as the real API server does.
type authKube struct {
	clientsetAPI
	fk    *fakeKube
	token string
}

func (a authKube) authenticate() error {
	claims, err := parseTokenClaims(a.token)
	if err != nil {
		return kubeCallError(apierrors.NewUnauthorized("invalid bearer token"))
	}
	if exp := claims.expiresAt(); !exp.IsZero() && time.Now().After(exp) {
		return kubeCallError(apierrors.NewUnauthorized("token has expired"))
	}
	if bound := claims.Kubernetes.Secret; bound.Name != "" {
		obj, err := a.fk.clientset.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, claims.Kubernetes.Namespace, bound.Name)
		if err != nil || string(obj.(*corev1.Secret).UID) != bound.UID {
			return kubeCallError(apierrors.NewUnauthorized("service account token has been invalidated"))
		}
	}
	return nil
}

func (a authKube) WhoAmI(context.Context) (string, error) {
	if err := a.authenticate(); err != nil {
		return "", err
	}
	claims, _ := parseTokenClaims(a.token)
	return claims.Sub, nil
}

func (a authKube) CreateToken(ctx context.Context, ns, sa string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	if err := a.authenticate(); err != nil {
		return nil, err
	}
	return a.clientsetAPI.CreateToken(ctx, ns, sa, req)
}

func (a authKube) CreateObject(ctx context.Context, kind string, obj metav1.Object) (objectRef, error) {
	if err := a.authenticate(); err != nil {
		return objectRef{}, err
	}
	return a.clientsetAPI.CreateObject(ctx, kind, obj)
}

func (a authKube) DeleteObject(ctx context.Context, ref objectRef) error {
	if err := a.authenticate(); err != nil {
		return err
	}
	return a.clientsetAPI.DeleteObject(ctx, ref)
}

// syncBuffer is a log sink safe for timers' goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// bootstrapJWT imitates `kubectl create token vault-plugin-scanner`: a
// token for the plugin's own service account bound to nothing.
func bootstrapJWT(jti string, ttl time.Duration) string {
	return fakeJWT(map[string]interface{}{
		"jti": jti, "exp": time.Now().Add(ttl).Unix(), "sub": pluginUser,
		"kubernetes.io": map[string]interface{}{"namespace": pluginNamespace, "serviceaccount": map[string]interface{}{"name": pluginSA, "uid": "plugin-sa-uid"}},
	})
}

type rotationFixture struct {
	b    *backend
	s    logical.Storage
	fk   *fakeKube
	logs *syncBuffer
}

// newRotationFixture is a backend whose cluster-a holds a bootstrap token
// for the plugin's own service account, with the given extra cluster
// fields, and whose clients authenticate like the real API server.
func newRotationFixture(t *testing.T, extra map[string]interface{}) *rotationFixture {
	t.Helper()
	logs := &syncBuffer{}
	b, s, fk := newTestBackendLogging(t, hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}))
	if err := fk.clientset.Tracker().Add(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pluginSA, Namespace: pluginNamespace, UID: "plugin-sa-uid"}}); err != nil {
		t.Fatal(err)
	}
	b.newKubeAPI = func(cfg *rest.Config) (kubeAPI, error) {
		fk.built.Add(1)
		fk.lastConfig.Store(cfg)
		return authKube{clientsetAPI: clientsetAPI{clientset: fk.clientset}, fk: fk, token: cfg.BearerToken}, nil
	}
	b.rotationGrace = time.Hour // tests that want the timer shorten it
	t.Cleanup(func() { b.rotation.stop() })
	body := withFields(validClusterBody(t), map[string]interface{}{"service_account_jwt": bootstrapJWT("bootstrap-jti", 10*time.Minute)})
	for k, v := range extra {
		body[k] = v
	}
	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, body)
	configureRole(t, b, s, nil)
	return &rotationFixture{b: b, s: s, fk: fk, logs: logs}
}

func (f *rotationFixture) cluster(t *testing.T) *clusterConfig {
	t.Helper()
	cfg, err := getCluster(context.Background(), f.s, testCluster)
	if err != nil || cfg == nil {
		t.Fatalf("cluster: %v %v", cfg, err)
	}
	return cfg
}

func (f *rotationFixture) rotate(t *testing.T) *logical.Response {
	t.Helper()
	return mustOK(t, f.b, f.s, logical.UpdateOperation, "clusters/"+testCluster+"/rotate-root", nil)
}

// rotationSecrets lists the Secrets rotation created, by name.
func (f *rotationFixture) rotationSecrets(t *testing.T) []string {
	t.Helper()
	list, err := f.fk.clientset.CoreV1().Secrets(pluginNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range list.Items {
		out = append(out, s.Name)
	}
	return out
}

// tokenWorks says whether the fake API server still accepts token.
func (f *rotationFixture) tokenWorks(token string) bool {
	_, err := authKube{clientsetAPI: clientsetAPI{clientset: f.fk.clientset}, fk: f.fk, token: token}.WhoAmI(context.Background())
	return err == nil
}

// assertNoJWT fails if text holds any stored credential seen in the test.
func assertNoJWT(t *testing.T, text string, jwts ...string) {
	t.Helper()
	for _, jwt := range jwts {
		for _, part := range strings.Split(jwt, ".")[1:] {
			if len(part) > 8 && strings.Contains(text, part) {
				t.Fatalf("a credential leaked into %.200q", text)
			}
		}
	}
}

// rotate-root with a bootstrap token: the new credential is a token for the
// plugin's own service account bound to a new Secret, verified before it is
// stored; the endpoint stays, the cached client switches, the bootstrap
// token is left to the operator (a warning says so), and no response, read
// or log carries a token.
func TestRotateRootReplacesBootstrapToken(t *testing.T) {
	f := newRotationFixture(t, nil)
	before := f.cluster(t)
	lease := mustOK(t, f.b, f.s, logical.ReadOperation, "creds/"+testRole, nil)
	built := f.fk.built.Load()

	resp := f.rotate(t)
	after := f.cluster(t)
	if after.JWT == before.JWT || after.EndpointID != before.EndpointID {
		t.Fatalf("JWT changed %v, endpoint %s -> %s: want a new JWT on the same endpoint", after.JWT != before.JWT, before.EndpointID, after.EndpointID)
	}
	if recs, _ := listRetiredEndpoints(context.Background(), f.s, testCluster); len(recs) != 0 {
		t.Errorf("rotation retired %d endpoints", len(recs))
	}
	claims, _ := parseTokenClaims(after.JWT)
	if resp.Data["credential_id"] != credentialID(claims.JTI) || resp.Data["credential_id"] == "" || resp.Data["expires_at"] != after.JWTExpiresAt.Format(time.RFC3339) {
		t.Errorf("response %v, want the new credential's id %s and expiry %s", resp.Data, credentialID(claims.JTI), after.JWTExpiresAt)
	}
	if len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "not created by the plugin") || !strings.Contains(resp.Warnings[0], "JTI=bootstrap-jti") {
		t.Errorf("warnings %q, want one saying the bootstrap token is left to the operator", resp.Warnings)
	}
	reqs := f.fk.tokenRequests()
	last := reqs[len(reqs)-1]
	if ref := last.Spec.BoundObjectRef; ref == nil || ref.Kind != kindSecret || ref.UID == "" || ref.UID != after.RotatedSecret.UID || after.RotatedSecret.Namespace != pluginNamespace {
		t.Fatalf("rotation TokenRequest bound to %+v, stored Secret %+v: want the new Secret in %s by UID", last.Spec.BoundObjectRef, after.RotatedSecret, pluginNamespace)
	}
	if *last.Spec.ExpirationSeconds != int64(minJWTTTL/time.Second) {
		t.Errorf("asked for %d s, want the default %s", *last.Spec.ExpirationSeconds, minJWTTTL)
	}
	if secrets := f.rotationSecrets(t); len(secrets) != 1 || !strings.HasPrefix(secrets[0], rotationSecretPrefix) {
		t.Errorf("Secrets in the plugin's namespace: %v", secrets)
	}
	if wals := walEntries(t, f.s); len(wals) != 0 {
		t.Errorf("%d WAL entries left", len(wals))
	}
	if !f.tokenWorks(before.JWT) {
		t.Error("the bootstrap token stopped working: it is the operator's to revoke")
	}

	// The next request uses the new credential, on a client built for it.
	mustOK(t, f.b, f.s, logical.ReadOperation, "creds/"+testRole, nil)
	if f.fk.built.Load() <= built || f.fk.lastConfig.Load().BearerToken != after.JWT {
		t.Error("the cached client was not rebuilt with the new credential")
	}
	// A lease issued before the rotation revokes with the new credential.
	if _, err := f.b.HandleRequest(context.Background(), revokeRequest(f.s, lease)); err != nil {
		t.Fatalf("revoking a lease issued before the rotation: %v", err)
	}

	read := readResponseData(t, f.b, f.s, "clusters/"+testCluster)
	if read["service_account_jwt_credential_id"] != resp.Data["credential_id"] || read["service_account_jwt_expires_at"] != resp.Data["expires_at"] ||
		read["last_rotated_at"] == "" || read["last_rotation_error"] != "" || read["service_account_jwt_rotated"] != true {
		t.Errorf("read %v", read)
	}
	assertNoJWT(t, fmt.Sprintf("%#v %#v %#v %s", resp, read, resp.Warnings, f.logs.String()), before.JWT, after.JWT)
	if !strings.Contains(f.logs.String(), "rotated the plugin's own credential") || !strings.Contains(f.logs.String(), resp.Data["credential_id"].(string)) {
		t.Error("the rotation was not logged with its credential id")
	}
}

// After a second rotation the first rotated credential dies once its grace
// is over: its Secret is deleted by UID from a timer, not in the request.
func TestRotateRootDeletesPreviousAfterGrace(t *testing.T) {
	f := newRotationFixture(t, nil)
	f.b.rotationGrace = 200 * time.Millisecond
	f.rotate(t)
	first := f.cluster(t)
	start := time.Now()
	resp := f.rotate(t)
	if time.Since(start) > f.b.rotationGrace {
		t.Errorf("rotate-root waited out the grace (%s)", time.Since(start))
	}
	if resp.Data["previous_credential_id"] != first.JWTCredentialID || len(resp.Warnings) != 1 { // only the rotation_period=0 note
		t.Errorf("response %v %q", resp.Data, resp.Warnings)
	}
	if !f.tokenWorks(first.JWT) {
		t.Fatal("the previous credential died before its grace")
	}
	second := f.cluster(t)
	if len(second.PendingDeletion) != 1 || second.PendingDeletion[0].Ref != *first.RotatedSecret {
		t.Fatalf("pending deletion %+v, want the first rotation's Secret", second.PendingDeletion)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.tokenWorks(first.JWT) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if f.tokenWorks(first.JWT) {
		t.Fatal("the previous rotated credential still works after its grace")
	}
	if !f.tokenWorks(second.JWT) {
		t.Fatal("the current credential died")
	}
	if secrets := f.rotationSecrets(t); len(secrets) != 1 || secrets[0] != second.RotatedSecret.Name {
		t.Errorf("Secrets left %v, want only %s", secrets, second.RotatedSecret.Name)
	}
	for deadline := time.Now().Add(5 * time.Second); len(f.cluster(t).PendingDeletion) != 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if p := f.cluster(t).PendingDeletion; len(p) != 0 {
		t.Errorf("pending deletions left: %+v", p)
	}
	mustOK(t, f.b, f.s, logical.ReadOperation, "creds/"+testRole, nil)
}

// A process that dies before its timer fires leaves the pending deletion in
// storage; the next periodic run after the grace deletes it.
func TestPendingDeletionSurvivesRestart(t *testing.T) {
	f := newRotationFixture(t, nil)
	f.rotate(t)
	first := f.cluster(t)
	f.rotate(t)
	f.b.rotation.stop() // the timer never fires: as if the process died
	f.b.resetClients()

	f.b.periodicRotation(context.Background(), f.s, time.Now())
	if !f.tokenWorks(first.JWT) {
		t.Fatal("deleted before the grace was over")
	}
	f.b.periodicRotation(context.Background(), f.s, time.Now().Add(f.b.rotationGrace+time.Second))
	if f.tokenWorks(first.JWT) {
		t.Fatal("the periodic run did not delete the previous rotation's Secret")
	}
	if p := f.cluster(t).PendingDeletion; len(p) != 0 {
		t.Errorf("pending deletions left: %+v", p)
	}
}

// A rotation that fails keeps the old credential, deletes the Secret it
// created (killing any token bound to it), leaves no WAL entry and records
// the error (without a token) for reads. An answer the plugin cannot use (a
// token that is not a JWT, or that authenticates as another account) is the
// API server's failure: 502, never 500.
func TestRotateRootFailureKeepsOldCredential(t *testing.T) {
	// newTokenAPI makes the clients of tokens other than the stored one
	// (the new credential) answer through wrap.
	newTokenAPI := func(t *testing.T, f *rotationFixture, wrap func(authKube) kubeAPI) {
		f.b.newKubeAPI = func(cfg *rest.Config) (kubeAPI, error) {
			a := authKube{clientsetAPI: clientsetAPI{clientset: f.fk.clientset}, fk: f.fk, token: cfg.BearerToken}
			if cfg.BearerToken != f.cluster(t).JWT {
				return wrap(a), nil
			}
			return a, nil
		}
		f.b.resetClients()
	}
	for _, tc := range []struct {
		name     string
		breakIt  func(*testing.T, *rotationFixture)
		wantCode int // 0: any 5xx
	}{
		{name: "TokenRequest fails", breakIt: func(_ *testing.T, f *rotationFixture) { f.fk.setTokenErr(errTokenRequestFailed) }},
		{name: "new token does not authenticate", wantCode: 502, breakIt: func(t *testing.T, f *rotationFixture) {
			newTokenAPI(t, f, func(a authKube) kubeAPI { return failingWhoAmI{a} })
		}},
		{name: "new credential authenticates as another account", wantCode: 502, breakIt: func(t *testing.T, f *rotationFixture) {
			newTokenAPI(t, f, func(a authKube) kubeAPI { return otherWhoAmI{a} })
		}},
		{name: "TokenRequest answer is not a JWT", wantCode: 502, breakIt: func(_ *testing.T, f *rotationFixture) {
			answerTokenRequests(f.fk, func(*authenticationv1.TokenRequest) string { return "not-a-jwt" })
		}},
		{name: "TokenRequest answer is a token for another account", wantCode: 502, breakIt: func(_ *testing.T, f *rotationFixture) {
			answerTokenRequests(f.fk, func(tr *authenticationv1.TokenRequest) string {
				return fakeJWT(map[string]interface{}{"sub": "system:serviceaccount:kube-system:admin", "exp": time.Now().Add(time.Hour).Unix(), "jti": "other"})
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRotationFixture(t, nil)
			before := f.cluster(t)
			tc.breakIt(t, f)
			resp, err := request(t, f.b, f.s, logical.UpdateOperation, "clusters/"+testCluster+"/rotate-root", nil)
			var coded logical.HTTPCodedError
			if !errors.As(err, &coded) || coded.Code() < 500 || (tc.wantCode != 0 && coded.Code() != tc.wantCode) {
				t.Fatalf("rotate-root: %v %v, want a %d", resp, err, max(tc.wantCode, 500))
			}
			after := f.cluster(t)
			if after.JWT != before.JWT || after.RotatedSecret != nil {
				t.Fatal("a failed rotation changed the stored credential")
			}
			if after.LastRotationError == "" {
				t.Error("last_rotation_error not recorded")
			}
			if secrets := f.rotationSecrets(t); len(secrets) != 0 {
				t.Errorf("the failed rotation left Secrets %v", secrets)
			}
			if wals := walEntries(t, f.s); len(wals) != 0 {
				t.Errorf("%d WAL entries left", len(wals))
			}
			read := readResponseData(t, f.b, f.s, "clusters/"+testCluster)
			assertNoJWT(t, fmt.Sprintf("%v %v %s", err, read, f.logs.String()), before.JWT)
			mustOK(t, f.b, f.s, logical.ReadOperation, "clusters/"+testCluster, nil)
		})
	}
}

// answerTokenRequests makes the fake API server answer TokenRequests with
// the token answer returns (after checking them as usual).
func answerTokenRequests(fk *fakeKube, answer func(*authenticationv1.TokenRequest) string) {
	fk.clientset.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		handled, obj, err := fk.tokenRequestReactor(action)
		if !handled || err != nil {
			return handled, obj, err
		}
		tr := obj.(*authenticationv1.TokenRequest)
		tr.Status.Token = answer(tr)
		return true, tr, nil
	})
}

// otherWhoAmI is a client whose token authenticates as someone else than
// its claims say.
type otherWhoAmI struct{ authKube }

func (o otherWhoAmI) WhoAmI(ctx context.Context) (string, error) {
	if _, err := o.authKube.WhoAmI(ctx); err != nil {
		return "", err
	}
	return "system:serviceaccount:kube-system:admin", nil
}

type failingWhoAmI struct{ authKube }

func (failingWhoAmI) WhoAmI(context.Context) (string, error) {
	return "", kubeCallError(apierrors.NewUnauthorized("invalid bearer token"))
}

// Bad input: 400, nothing stored, nothing created.
func TestRotationBadInput(t *testing.T) {
	b, s, fk := newTestBackend(t)
	body := withFields(validClusterBody(t), map[string]interface{}{"service_account_jwt": bootstrapJWT("j", time.Hour)})
	for name, tc := range map[string]struct {
		fields map[string]interface{}
		want   string
	}{
		"period below a minute":   {map[string]interface{}{"rotation_period": "30s"}, "rotation_period"},
		"negative period":         {map[string]interface{}{"rotation_period": "-1m"}, ""},
		"ttl below 10m":           {map[string]interface{}{"service_account_jwt_ttl": "5m"}, "service_account_jwt_ttl"},
		"ttl not above period":    {map[string]interface{}{"rotation_period": "1h", "service_account_jwt_ttl": "1h"}, "rotation_period"},
		"ttl within the margin":   {map[string]interface{}{"rotation_period": "10m", "service_account_jwt_ttl": "12m"}, "plus"},
		"default ttl too short":   {map[string]interface{}{"rotation_period": "1h", "service_account_jwt_ttl": "61m"}, "plus"},
		"ttl beyond TokenRequest": {map[string]interface{}{"service_account_jwt_ttl": fmt.Sprintf("%ds", int64(1)<<33)}, "service_account_jwt_ttl"},
		// The default lifetime is twice the period: it too must fit.
		"default ttl beyond TokenRequest": {map[string]interface{}{"rotation_period": fmt.Sprintf("%ds", int64(1)<<31+1)}, "TokenRequest allows (4294967296 s)"},
		"period beyond TokenRequest":      {map[string]interface{}{"rotation_period": fmt.Sprintf("%ds", int64(1)<<32+1), "service_account_jwt_ttl": fmt.Sprintf("%ds", int64(1)<<32)}, "rotation_period"},
	} {
		t.Run(name, func(t *testing.T) {
			state := recordState(t, b, s, fk)
			mustBadRequest(t, b, s, logical.CreateOperation, "clusters/"+testCluster, withFields(body, tc.fields), tc.want)
			state.check(t)
		})
	}
	t.Run("in-cluster", func(t *testing.T) {
		state := recordState(t, b, s, fk)
		mustBadRequest(t, b, s, logical.CreateOperation, "clusters/in", map[string]interface{}{"rotation_period": "1h"}, "kubelet")
		state.check(t)
	})

	mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, withFields(body, map[string]interface{}{"rotation_period": "1m"}))
	if got := readResponseData(t, b, s, "clusters/"+testCluster); got["rotation_period"] != int64(60) || got["service_account_jwt_ttl"] != int64(600) ||
		got["service_account_jwt_credential_id"] != "JTI=j" || got["service_account_jwt_expires_at"] == "" {
		t.Errorf("read %v, want period 60, default ttl 600 and the bootstrap's id and expiry", got)
	}
	mustOK(t, b, s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"rotation_period": "1h"})
	if got := readResponseData(t, b, s, "clusters/"+testCluster); got["service_account_jwt_ttl"] != int64(7200) {
		t.Errorf("default ttl %v, want twice the period", got["service_account_jwt_ttl"])
	}

	for name, tc := range map[string]struct {
		cluster map[string]interface{}
		want    string
	}{
		"in-cluster":      {map[string]interface{}{}, "kubelet"},
		"no claims":       {validClusterBody(t), "no service-account claims"},
		"not a SA token":  {withFields(validClusterBody(t), map[string]interface{}{"service_account_jwt": fakeJWT(map[string]interface{}{"sub": "system:serviceaccount:onlyns"})}), "no service-account claims"},
		"unknown cluster": {nil, "not configured"},
	} {
		t.Run("rotate-root/"+name, func(t *testing.T) {
			b, s, fk := newTestBackend(t)
			if tc.cluster != nil {
				mustOK(t, b, s, logical.CreateOperation, "clusters/"+testCluster, tc.cluster)
			}
			state := recordState(t, b, s, fk)
			mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster+"/rotate-root", nil, tc.want)
			mustBadRequest(t, b, s, logical.UpdateOperation, "clusters/"+testCluster+"/rotate-root", map[string]interface{}{"ttl": "1h"}, "unknown field")
			state.check(t)
		})
	}
}

// Automatic rotation runs from the periodic function on the active node
// only, once rotation_period has passed, and backs off after failures; a
// failure leaves the old credential in use and warns as it nears expiry.
func TestPeriodicRotation(t *testing.T) {
	for name, state := range map[string]consts.ReplicationState{
		"performance standby":   consts.ReplicationPerformanceStandby,
		"performance secondary": consts.ReplicationPerformanceSecondary,
	} {
		t.Run(name, func(t *testing.T) {
			f := newRotationFixture(t, map[string]interface{}{"rotation_period": "1m"})
			f.b.System().(*logical.StaticSystemView).ReplicationStateVal = state
			if err := f.b.periodic(context.Background(), &logical.Request{Storage: f.s}); err != nil {
				t.Fatal(err)
			}
			if f.cluster(t).RotatedSecret != nil {
				t.Fatal("rotated on a node that may not write")
			}
		})
	}

	f := newRotationFixture(t, map[string]interface{}{"rotation_period": "1m"})
	manual := newRotationFixture(t, nil)
	rotations := func(f *rotationFixture) int { return len(f.fk.tokenRequests()) }
	if err := f.b.periodic(context.Background(), &logical.Request{Storage: f.s}); err != nil {
		t.Fatal(err)
	}
	first := f.cluster(t)
	if first.RotatedSecret == nil {
		t.Fatal("the bootstrap token was not rotated by the first periodic run")
	}
	if err := manual.b.periodic(context.Background(), &logical.Request{Storage: manual.s}); err != nil || manual.cluster(t).RotatedSecret != nil {
		t.Fatalf("rotation_period 0 rotated automatically (%v)", err)
	}
	now := time.Now()
	f.b.periodicRotation(context.Background(), f.s, now.Add(30*time.Second))
	if n := rotations(f); n != 1 {
		t.Fatalf("%d rotations within the period, want 1", n)
	}
	f.b.periodicRotation(context.Background(), f.s, now.Add(55*time.Second))
	if n := rotations(f); n != 2 || f.cluster(t).JWT == first.JWT {
		t.Fatalf("%d rotations a period later, want 2", n)
	}
	if !strings.Contains(f.logs.String(), "credential_id="+f.cluster(t).JWTCredentialID) {
		t.Error("the automatic rotation was not logged with its credential id")
	}

	// Failures: backoff, old credential kept, error recorded, warning
	// before expiry.
	good := f.cluster(t)
	f.fk.setTokenErr(errTokenRequestFailed)
	at := now.Add(2 * time.Minute)
	f.b.periodicRotation(context.Background(), f.s, at)
	if n := rotations(f); n != 3 {
		t.Fatalf("%d TokenRequests, want the failed third", n)
	}
	f.b.periodicRotation(context.Background(), f.s, at.Add(30*time.Second))
	if n := rotations(f); n != 3 {
		t.Fatalf("retried within the backoff: %d TokenRequests", n)
	}
	f.b.periodicRotation(context.Background(), f.s, at.Add(time.Minute))
	if n := rotations(f); n != 4 {
		t.Fatalf("no retry after the backoff: %d TokenRequests", n)
	}
	if c := f.cluster(t); c.JWT != good.JWT || c.LastRotationError == "" {
		t.Fatalf("after failures: JWT kept %v, last_rotation_error %q", c.JWT == good.JWT, c.LastRotationError)
	}
	nearExpiry := good.JWTExpiresAt.Add(-3 * time.Minute)
	f.b.periodicRotation(context.Background(), f.s, nearExpiry)
	if !strings.Contains(f.logs.String(), "expires soon and rotation keeps failing") {
		t.Error("no warning as the credential nears its expiry")
	}
	f.fk.setTokenErr(nil)
	f.b.periodicRotation(context.Background(), f.s, nearExpiry.Add(maxRotationBackoff))
	if c := f.cluster(t); c.JWT == good.JWT || c.LastRotationError != "" {
		t.Fatal("rotation did not recover after the failures")
	}
	assertNoJWT(t, f.logs.String(), first.JWT, good.JWT, f.cluster(t).JWT)
}

// A standby drops its cached client when the active node's rotation
// changes the cluster entry, and issues with the new credential.
func TestRotationInvalidatesStandby(t *testing.T) {
	f := newRotationFixture(t, nil)
	standby := newBackend("v0.0.0-test")
	standby.newKubeAPI = f.b.newKubeAPI
	config := logical.TestBackendConfig()
	config.StorageView = f.s
	config.System = &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
	if err := standby.Setup(context.Background(), config); err != nil {
		t.Fatal(err)
	}
	if _, err := standby.client(context.Background(), f.s, testCluster); err != nil {
		t.Fatal(err)
	}
	f.rotate(t)
	standby.invalidate(context.Background(), clusterStoragePrefix+testCluster)
	c, err := standby.client(context.Background(), f.s, testCluster)
	if err != nil {
		t.Fatal(err)
	}
	if c.endpoint.restConfig.BearerToken != f.cluster(t).JWT {
		t.Fatal("the standby kept the replaced credential after Invalidate")
	}
}

// A rotation WAL entry left behind is rolled back only if the rotation was
// never stored: the current credential's Secret is never deleted by it.
func TestRotationRollback(t *testing.T) {
	f := newRotationFixture(t, nil)
	f.rotate(t)
	cur := f.cluster(t)
	orphan, err := f.fk.clientset.CoreV1().Secrets(pluginNamespace).Create(context.Background(), rotationSecret(testCluster, pluginNamespace, time.Now(), "x"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []objectRef{*cur.RotatedSecret, refOf(kindSecret, orphan)} {
		if _, err := framework.PutWAL(context.Background(), f.s, walRotationKind, &walEntry{
			Cluster: testCluster, Endpoint: cur.EndpointID, CreatedAt: time.Now().Add(-time.Hour), Objects: []objectRef{ref},
		}); err != nil {
			t.Fatal(err)
		}
	}
	rollbackNow(t, f.b, f.s)
	if secrets := f.rotationSecrets(t); len(secrets) != 1 || secrets[0] != cur.RotatedSecret.Name {
		t.Fatalf("Secrets after rollback %v, want only the current credential's %s", secrets, cur.RotatedSecret.Name)
	}
	if !f.tokenWorks(cur.JWT) {
		t.Fatal("rollback killed the current credential")
	}
}

// check reports whether the plugin may rotate its own credential, and when
// the stored one expires; with rotation_period set a missing right makes
// check fail.
func TestCheckReportsSelfRotation(t *testing.T) {
	deny := func(fk *fakeKube) {
		fk.clientset.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
			review := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
			a := review.Spec.ResourceAttributes
			review.Status.Allowed = !(a.Namespace == pluginNamespace && a.Subresource == "token")
			return true, review, nil
		})
	}
	f := newRotationFixture(t, nil)
	got := readResponseData(t, f.b, f.s, "clusters/"+testCluster+"/check")
	if got["self_rotation_permitted"] != true || got["service_account_jwt_expires_at"] == "" || got["ok"] != true {
		t.Fatalf("check %v", got)
	}
	if !strings.Contains(fmt.Sprint(got["checked_permissions"]), `create serviceaccounts/token "vault-plugin-scanner" in namespace "vault-plugin-scanner"`) {
		t.Errorf("checked %v", got["checked_permissions"])
	}
	deny(f.fk)
	got = readResponseData(t, f.b, f.s, "clusters/"+testCluster+"/check")
	if got["self_rotation_permitted"] != false || got["ok"] != true || !strings.Contains(fmt.Sprint(got["notes"]), "rotate-root would fail") {
		t.Errorf("manual rotation only, right missing: %v", got)
	}
	mustOK(t, f.b, f.s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"rotation_period": "1h"})
	got = readResponseData(t, f.b, f.s, "clusters/"+testCluster+"/check")
	if got["ok"] != false || !strings.Contains(fmt.Sprint(got["missing_permissions"]), "serviceaccounts/token") {
		t.Errorf("automatic rotation, right missing: %v", got)
	}

	b, s, _ := newConfiguredBackend(t)
	if got := readResponseData(t, b, s, "clusters/"+testCluster+"/check"); got["self_rotation_permitted"] != false || !strings.Contains(fmt.Sprint(got["notes"]), "no service-account claims") {
		t.Errorf("JWT without claims: %v", got)
	}
}

// Writing a new JWT by hand after rotations schedules the plugin's own
// rotated credential for deletion, and rotation starts over from it.
func TestOperatorJWTReplacesRotated(t *testing.T) {
	f := newRotationFixture(t, nil)
	f.b.rotationGrace = 100 * time.Millisecond
	f.rotate(t)
	rotated := f.cluster(t)
	resp := mustOK(t, f.b, f.s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{"service_account_jwt": bootstrapJWT(uuid.NewString(), time.Hour)})
	if resp == nil || len(resp.Warnings) == 0 {
		t.Error("no warning that the rotated credential is deleted")
	}
	c := f.cluster(t)
	if c.RotatedSecret != nil || !c.LastRotatedAt.IsZero() || c.EndpointID != rotated.EndpointID {
		t.Fatalf("after an operator write: %+v", c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.tokenWorks(rotated.JWT) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if f.tokenWorks(rotated.JWT) {
		t.Fatal("the replaced rotated credential still works")
	}
}

// The grace timer that deletes a replaced credential's Secret does nothing
// on a node that may not write (a standby): the active node's periodic run
// deletes it.
func TestGraceDeleteSkippedOnStandby(t *testing.T) {
	f := newRotationFixture(t, nil)
	f.b.rotationGrace = 50 * time.Millisecond
	f.rotate(t)
	first := f.cluster(t)
	// Set before the rotation arms its timer, which then reads it.
	f.b.System().(*logical.StaticSystemView).ReplicationStateVal = consts.ReplicationPerformanceStandby
	if _, err := f.b.rotateRoot(context.Background(), f.s, testCluster, time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(f.logs.String(), "left to the active node") && f.tokenWorks(first.JWT) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(4 * f.b.rotationGrace)
	if !f.tokenWorks(first.JWT) {
		t.Fatal("a standby's timer deleted the replaced credential's Secret")
	}
	if p := f.cluster(t).PendingDeletion; len(p) != 1 || p[0].Ref != *first.RotatedSecret {
		t.Errorf("pending deletions %+v, want the first rotation's Secret kept for the active node", p)
	}
}

// repointRotated rotates twice (the first credential pending deletion, the
// second current) and re-points the cluster: both stay with the retired
// endpoint.
func repointRotated(t *testing.T, f *rotationFixture) (first, second *clusterConfig) {
	t.Helper()
	f.rotate(t)
	first = f.cluster(t)
	f.rotate(t)
	second = f.cluster(t)
	resp := mustOK(t, f.b, f.s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host": otherHost, "service_account_jwt": bootstrapJWT("after-repoint", time.Hour),
	})
	if resp == nil || !strings.Contains(fmt.Sprint(resp.Warnings), "stays with the retired endpoint") {
		t.Errorf("warnings %v, want one saying the rotated credential stays with the retired endpoint", resp)
	}
	return first, second
}

// After a re-point the credential the plugin had rotated to stays with the
// retired endpoint, which needs it to revoke its leases: its Secret is not
// deleted, neither then nor by the timers and periodic runs after.
func TestRotatedCredentialStaysWithRetiredEndpoint(t *testing.T) {
	f := newRotationFixture(t, nil)
	f.b.rotationGrace = 50 * time.Millisecond
	_, second := repointRotated(t, f)
	recs, err := listRetiredEndpoints(context.Background(), f.s, testCluster)
	if err != nil || len(recs) != 1 || recs[0].Config.JWT != second.JWT || recs[0].Config.RotatedSecret == nil || *recs[0].Config.RotatedSecret != *second.RotatedSecret {
		t.Fatalf("retired endpoints %v (%v), want the old endpoint with the rotated credential", recs, err)
	}
	time.Sleep(4 * f.b.rotationGrace)
	f.b.periodicRotation(context.Background(), f.s, time.Now().Add(time.Hour))
	if !f.tokenWorks(second.JWT) || !slices.Contains(f.rotationSecrets(t), second.RotatedSecret.Name) {
		t.Fatal("the retired endpoint's credential was killed by the re-point")
	}
	if c := f.cluster(t); slices.ContainsFunc(c.PendingDeletion, func(p pendingSecret) bool { return p.Ref.UID == second.RotatedSecret.UID }) {
		t.Errorf("the new entry schedules the retired endpoint's credential for deletion: %+v", c.PendingDeletion)
	}
}

// Forgetting a retired endpoint ends the credentials the plugin rotated to
// there (their Secrets are deleted by UID); if that fails, the endpoint is
// kept and retried, unless the credential has expired anyway. Nothing of
// the endpoint is left in storage.
func TestPruneEndsRotatedCredential(t *testing.T) {
	for _, tc := range []struct {
		name          string
		failDeletes   bool
		pruneAfter    time.Duration // after the re-point
		wantForgotten bool
		wantDeleted   bool
	}{
		{name: "deleted", pruneAfter: walGiveUpAge + time.Hour, wantForgotten: true, wantDeleted: true},
		{name: "delete fails while the credential lives", failDeletes: true, pruneAfter: walGiveUpAge + time.Hour},
		{name: "delete fails after the credential expired", failDeletes: true, pruneAfter: 101 * time.Hour, wantForgotten: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRotationFixture(t, map[string]interface{}{"service_account_jwt_ttl": "100h"})
			mustOK(t, f.b, f.s, logical.ReadOperation, "creds/"+testRole, nil) // records a lease horizon
			putHorizon(t, f.s, "an-endpoint-no-one-knows", time.Now())         // and one whose endpoint is gone
			first, second := repointRotated(t, f)
			repointed := time.Now()
			if tc.failDeletes {
				failSecretDeletes(f.fk)
			}
			if _, err := f.b.pruneRetiredEndpoints(context.Background(), f.s, repointed.Add(walGiveUpAge-time.Minute)); err != nil {
				t.Fatal(err)
			}
			if !f.tokenWorks(second.JWT) {
				t.Fatal("pruned before the endpoint's time")
			}
			_, err := f.b.pruneRetiredEndpoints(context.Background(), f.s, repointed.Add(tc.pruneAfter))
			if (err == nil) != tc.wantForgotten {
				t.Errorf("prune: %v", err)
			}
			recs, _ := listRetiredEndpoints(context.Background(), f.s, testCluster)
			if forgotten := len(recs) == 0; forgotten != tc.wantForgotten {
				t.Fatalf("forgotten %v, want %v", forgotten, tc.wantForgotten)
			}
			for _, c := range []*clusterConfig{first, second} {
				if deleted := !slices.Contains(f.rotationSecrets(t), c.RotatedSecret.Name); deleted != tc.wantDeleted {
					t.Errorf("Secret %s deleted %v, want %v", c.RotatedSecret.Name, deleted, tc.wantDeleted)
				}
			}
			if tc.wantForgotten {
				if p := f.cluster(t).PendingDeletion; len(p) != 0 {
					t.Errorf("the cluster entry still schedules deletions on the forgotten endpoint: %+v", p)
				}
				for _, key := range sortedKeys(storageSnapshot(t, f.s)) {
					if strings.HasPrefix(key, retiredEndpointPrefix) || strings.HasPrefix(key, leaseHorizonPrefix) {
						t.Errorf("storage still holds %s", key)
					}
				}
			}
			assertNoJWT(t, fmt.Sprint(err)+f.logs.String(), first.JWT, second.JWT)
		})
	}
}

// A crash after the rotated credential was stored but before its WAL entry
// was deleted, then a re-point: rollback must not delete the Secret of the
// credential the retired endpoint holds, or that endpoint's leases could no
// longer be revoked.
func TestRotationRollbackSparesRetiredCredential(t *testing.T) {
	f := newRotationFixture(t, nil)
	s := &failingStorage{Storage: f.s}
	s.failDelete.Store(keyPrefix(framework.WALPrefix))
	if _, err := f.b.rotateRoot(context.Background(), s, testCluster, time.Now()); err != nil {
		t.Fatal(err)
	}
	if wals := walEntries(t, f.s); len(wals) == 0 {
		t.Fatal("setup: no WAL entry left, want those whose delete failed")
	}
	s.failDelete.Store(nil)
	rotated := f.cluster(t)
	lease := mustOK(t, f.b, f.s, logical.ReadOperation, "creds/"+testRole, nil)
	mustOK(t, f.b, f.s, logical.UpdateOperation, "clusters/"+testCluster, map[string]interface{}{
		"kubernetes_host": otherHost, "service_account_jwt": bootstrapJWT("after-repoint", time.Hour),
	})
	rollbackNow(t, f.b, f.s)
	if !slices.Contains(f.rotationSecrets(t), rotated.RotatedSecret.Name) || !f.tokenWorks(rotated.JWT) {
		t.Fatal("rollback deleted the Secret of the credential the retired endpoint holds")
	}
	if wals := walEntries(t, f.s); len(wals) != 0 {
		t.Errorf("%d WAL entries left", len(wals))
	}
	if _, err := f.b.HandleRequest(context.Background(), revokeRequest(f.s, lease)); err != nil {
		t.Fatalf("revoking a lease of the retired endpoint: %v", err)
	}
}

// The rotation's Secret is covered by a WAL entry from before its create:
// whatever fails, either the Secret is gone or an entry names it, and
// rollback then deletes it (only if it carries the rotation's issue ID).
func TestRotationSecretCoveredByWAL(t *testing.T) {
	for _, tc := range []struct {
		name string
		// breakIt makes the rotation fail; the returned func repairs.
		breakIt func(*rotationFixture, *failingStorage) func()
		// wantSecretLeft: the failed rotation leaves its Secret (and a WAL
		// entry naming it) for rollback.
		wantSecretLeft bool
	}{
		{
			name: "create outcome unknown, lookup fails",
			breakIt: func(f *rotationFixture, _ *failingStorage) func() {
				storeThenTimeOut(f.fk)
				lookups := &atomic.Bool{}
				lookups.Store(true)
				f.fk.clientset.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
					if lookups.Load() {
						return true, nil, apierrors.NewServiceUnavailable("apiserver is down")
					}
					return false, nil, nil
				})
				return func() { lookups.Store(false) }
			},
			wantSecretLeft: true,
		},
		{
			name: "TokenRequest, Secret delete and WAL delete fail",
			breakIt: func(f *rotationFixture, s *failingStorage) func() {
				f.fk.setTokenErr(errTokenRequestFailed)
				deletes := failSecretDeletes(f.fk)
				s.failDelete.Store(keyPrefix(framework.WALPrefix))
				return func() { deletes.Store(false); s.failDelete.Store(nil) }
			},
			wantSecretLeft: true,
		},
		{
			name: "TokenRequest and Secret delete fail, no get right",
			breakIt: func(f *rotationFixture, _ *failingStorage) func() {
				f.fk.setTokenErr(errTokenRequestFailed)
				deletes := failSecretDeletes(f.fk)
				// The shipped RBAC: rollback must know the Secret by UID.
				f.fk.clientset.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("RBAC: get not granted"))
				})
				return func() { deletes.Store(false) }
			},
			wantSecretLeft: true,
		},
		{
			name: "WAL write fails",
			breakIt: func(f *rotationFixture, s *failingStorage) func() {
				failSecretDeletes(f.fk) // nothing may need deleting
				s.failPut.Store(keyPrefix(framework.WALPrefix))
				return func() {}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRotationFixture(t, nil)
			before := f.cluster(t)
			s := &failingStorage{Storage: f.s}
			// Every create of a rotation Secret must find its WAL entry.
			f.fk.clientset.PrependReactor("create", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
				if action.GetNamespace() == pluginNamespace && len(walEntries(t, f.s)) == 0 {
					t.Error("the rotation Secret was created before its WAL entry")
				}
				return false, nil, nil
			})
			repair := tc.breakIt(f, s)
			if _, err := f.b.rotateRoot(context.Background(), s, testCluster, time.Now()); err == nil {
				t.Fatal("the rotation succeeded")
			}
			if f.cluster(t).JWT != before.JWT {
				t.Fatal("a failed rotation changed the stored credential")
			}
			secretLeft, wals := len(f.rotationSecrets(t)) > 0, len(walEntries(t, f.s))
			if secretLeft != tc.wantSecretLeft || (secretLeft && wals == 0) {
				t.Fatalf("Secret left %v (want %v) with %d WAL entries: nothing would end it", secretLeft, tc.wantSecretLeft, wals)
			}
			repair()
			rollbackNow(t, f.b, f.s)
			if left := f.rotationSecrets(t); len(left) != 0 {
				t.Errorf("rollback left Secrets %v", left)
			}
			if wals := walEntries(t, f.s); len(wals) != 0 {
				t.Errorf("%d WAL entries left", len(wals))
			}
		})
	}
}

// storeThenTimeOut makes the fake API server store Secrets in the plugin's
// namespace but answer their create with a timeout, as a slow etcd does.
func storeThenTimeOut(fk *fakeKube) {
	fk.clientset.PrependReactor("create", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetNamespace() != pluginNamespace {
			return false, nil, nil
		}
		obj := action.(k8stesting.CreateAction).GetObject().(*corev1.Secret).DeepCopy()
		obj.UID = types.UID(uuid.NewString())
		if err := fk.clientset.Tracker().Create(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, obj, pluginNamespace); err != nil {
			return true, nil, err
		}
		return true, nil, apierrors.NewTimeoutError("request did not complete within the allowed duration", 1)
	})
}
