package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/cloud"
	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tenant.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRun(t *testing.T) {
	noTenant := writeConfig(t, "clusterName: c\ninfraNamespace: ns\nstorage: {defaultStorageClass: s}\n")
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, "--load-balancer-class"},
		{nil, 2, "error: --config is required"},
		{[]string{"--config", noTenant, "--load-balancer-class", "not a class!"}, 2, "--load-balancer-class"},
		{[]string{"--config", noTenant, "--leader-elect-lease-duration", "1s"}, 2, "retry period < renew deadline < lease duration"},
		{[]string{"--config", noTenant, "--secure-port", "70000"}, 2, "--secure-port"},
		{[]string{"--config", noTenant}, 1, "tenantKubeconfig: Required value"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}

// TestTenantRESTConfig: the flags' limits and the framework's encoding reach every tenant
// client, and the kubeconfig's own config is left alone.
func TestTenantRESTConfig(t *testing.T) {
	var out bytes.Buffer
	var f ccmFlags
	// Parse the defaults into f through a real run that stops at --check-config.
	cfgPath := writeConfig(t, "clusterName: c\ninfraNamespace: ns\ntenantKubeconfig: /t/kubeconfig\nstorage: {defaultStorageClass: s}\n")
	code := cli.Program{Component: config.CCM, AddFlags: f.add, CheckFlags: f.check}.Run(
		[]string{"--config", cfgPath, "--check-config", "--kube-api-qps=70", "--kube-api-burst=140"}, &out, &out)
	if code != 0 {
		t.Fatalf("check-config: %d %s", code, &out)
	}
	if !f.leaderElect || f.leaseNamespace != "kube-system" || f.serviceSyncs != 2 || f.nodeMonitorPeriod != 5*time.Second {
		t.Errorf("defaults: %+v", f)
	}
	base := &rest.Config{Host: "https://tenant.example:6443", QPS: 5, Burst: 10}
	got := f.tenantRESTConfig(base)
	if got.QPS != 70 || got.Burst != 140 || got.ContentType != "application/vnd.kubernetes.protobuf" || !got.DisableCompression {
		t.Errorf("tenant rest config: QPS %v burst %d content type %q compression off %v", got.QPS, got.Burst, got.ContentType, got.DisableCompression)
	}
	if base.QPS != 5 || base.ContentType != "" {
		t.Errorf("the kubeconfig's config was modified: %+v", base)
	}
	b := cloud.ClientBuilder{RESTConfig: got}
	if ua := b.ConfigOrDie("service-controller").UserAgent; !strings.HasPrefix(ua, "ccm") || !strings.HasSuffix(ua, "/service-controller") {
		t.Errorf("user agent %q: want the binary's name first (the audit check tells the ccm by it) and the client's last", ua)
	}
	if !slices.Equal(controllers, []string{"cloud-node-controller", "cloud-node-lifecycle-controller", "service-lb-controller"}) {
		t.Errorf("controllers %v", controllers)
	}
}

// TestHealthEndpoint: --secure-port serves /healthz over TLS to a client without credentials.
func TestHealthEndpoint(t *testing.T) {
	addr, err := serveHealth(t.Context(), "127.0.0.1:0", leaderelection.NewLeaderHealthzAdaptor(leaderHealthTimeout))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	for _, path := range []string{"/healthz", "/healthz/leaderElection"} {
		resp, err := c.Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok" || resp.TLS == nil {
			t.Errorf("GET %s: %d %q (TLS %v)", path, resp.StatusCode, body, resp.TLS != nil)
		}
	}
	resp, err := c.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the health port: %d, want 404 (metrics are on --metrics-bind-address)", resp.StatusCode)
	}
}

// TestEventsApart: the service controller's Events leave through their own client (and rate
// limiter), everything else through its own, as a recording apiserver sees from the user agents.
func TestEventsApart(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // request path → user agent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.UserAgent()
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"apiVersion":"v1","kind":"Event","metadata":{"name":"x"}}`))
	}))
	defer srv.Close()
	b := cloud.ClientBuilder{RESTConfig: &rest.Config{Host: srv.URL}}
	c := eventsApart{b.ClientOrDie("main"), b.ClientOrDie("events").CoreV1()}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "ns"}}
	if _, err := c.CoreV1().Events("ns").Create(t.Context(), ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The response is not a Service; only the request matters here.
	_, _ = c.CoreV1().Services("ns").Patch(t.Context(), "s", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{}, "status")
	mu.Lock()
	defer mu.Unlock()
	if ua := seen["/api/v1/namespaces/ns/events"]; !strings.HasSuffix(ua, "/events") {
		t.Errorf("event create sent by %q, want the events client", ua)
	}
	if ua := seen["/api/v1/namespaces/ns/services/s/status"]; !strings.HasSuffix(ua, "/main") {
		t.Errorf("service status patch sent by %q, want the main client", ua)
	}
}

// TestGCPercent: the ccm asks pkg/cli for its GOGC; that GOGC from the environment wins is
// pkg/cli's TestApplyGCPercent.
func TestGCPercent(t *testing.T) {
	var flags ccmFlags
	if got := program(&flags).GCPercent; got != gcPercent {
		t.Errorf("GCPercent %d, want %d", got, gcPercent)
	}
}
