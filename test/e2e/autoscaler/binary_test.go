package autoscaler_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// logWatcher collects a process's output lines and lets a test wait for one matching a
// pattern.
type logWatcher struct {
	lines chan string
	mu    sync.Mutex
	buf   strings.Builder
}

func watchLog(r io.Reader) *logWatcher {
	w := &logWatcher{lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	return w
}

func (w *logWatcher) add(line string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.WriteString(line + "\n")
}

func (w *logWatcher) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// wait returns the first submatch of re in the next matching line.
func (w *logWatcher) wait(tb testing.TB, re *regexp.Regexp, timeout time.Duration) string {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				tb.Fatalf("process exited before logging %s; output:\n%s", re, w.output())
			}
			w.add(line)
			if m := re.FindStringSubmatch(line); m != nil {
				return m[len(m)-1]
			}
		case <-deadline:
			tb.Fatalf("no log line matching %s within %s; output:\n%s", re, timeout, w.output())
		}
	}
}

// drain keeps reading so the process never blocks on a full pipe.
func (w *logWatcher) drain() {
	go func() {
		for line := range w.lines {
			w.add(line)
		}
	}()
}

// buildProvider builds cmd/autoscaler-provider into a temporary directory.
func buildProvider(tb testing.TB, ctx context.Context) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := harness.BuildPrograms(ctx, dir, nil, "autoscaler-provider"); err != nil {
		tb.Fatal(err)
	}
	return filepath.Join(dir, "autoscaler-provider")
}

// process is a running autoscaler-provider binary.
type process struct {
	cmd         *exec.Cmd
	exited      chan error
	logs        *logWatcher
	grpcAddr    string
	metricsAddr string
}

// runProvider starts bin for tenant (namespace, cluster) with a config file pointing at the
// harness kubeconfigs, as a deployment would, and waits until it is ready.
func runProvider(tb testing.TB, bin, ns, cluster string) *process {
	tb.Helper()
	cfg := filepath.Join(tb.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`clusterName: %s
infraNamespace: %s
infraKubeconfig: %s
tenantKubeconfig: %s
storage:
  defaultStorageClass: unused
`, cluster, ns, env.Management.Kubeconfig, env.Tenant.Kubeconfig)), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg, "--listen", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "-v=2")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan error, 1), logs: watchLog(stderr)}
	go func() { p.exited <- cmd.Wait() }()
	tb.Cleanup(func() { _ = cmd.Process.Kill() })
	// pkg/cli serves metrics before the program starts.
	p.metricsAddr = p.logs.wait(tb, regexp.MustCompile(`"Serving metrics" address="([^"]+)"`), time.Minute)
	p.grpcAddr = p.logs.wait(tb, regexp.MustCompile(`"Serving CloudProvider gRPC" address="([^"]+)"`), time.Minute)
	p.logs.wait(tb, regexp.MustCompile(`"Autoscaler provider ready"`), time.Minute)
	p.logs.drain()
	return p
}

// dial connects the way cluster-autoscaler does, with the provider's codec.
func (p *process) dial(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(autoscaler.Codec())))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// groupMD is an autoscaled MachineDeployment of cluster, min 1, max 4.
func groupMD(ns, name, cluster string, replicas int32) *clusterv1.MachineDeployment {
	return &clusterv1.MachineDeployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{infra.LabelClusterName: cluster},
			Annotations: map[string]string{autoscaler.AnnotationMinSize: "1", autoscaler.AnnotationMaxSize: "4"}},
		Spec: clusterv1.MachineDeploymentSpec{
			ClusterName: cluster,
			Replicas:    ptr(replicas),
			Selector:    metav1.LabelSelector{MatchLabels: map[string]string{clusterv1.MachineDeploymentNameLabel: name}},
			Template: clusterv1.MachineTemplateSpec{Spec: clusterv1.MachineSpec{
				ClusterName: cluster,
				Bootstrap:   clusterv1.Bootstrap{DataSecretName: ptr("data")},
				InfrastructureRef: clusterv1.ContractVersionedObjectReference{
					APIGroup: "infrastructure.cluster.x-k8s.io", Kind: "KubevirtMachineTemplate", Name: name},
			}},
		},
	}
}

// TestBinary builds cmd/autoscaler-provider, runs it against the harness with a tenant config
// file like a deployment would, asks it for node groups over gRPC, reads its metrics and stops
// it with SIGTERM.
func TestBinary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildProvider(t, ctx)

	ns, cluster := "bin-"+strings.ToLower(rand.String(5)), "alpha"
	c := env.Management.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, groupMD(ns, "workers", cluster, 2)); err != nil {
		t.Fatal(err)
	}
	p := runProvider(t, bin, ns, cluster)
	conn := p.dial(t)

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: autoscaler.ServiceName})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", hc.GetStatus(), err)
	}
	resp, err := protos.NewCloudProviderClient(conn).NodeGroups(ctx, &protos.NodeGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetNodeGroups()) != 1 || resp.GetNodeGroups()[0].GetId() != ns+"/workers" || resp.GetNodeGroups()[0].GetMaxSize() != 4 {
		t.Fatalf("node groups %s", show(resp.GetNodeGroups()))
	}

	mresp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	_ = mresp.Body.Close()
	for _, want := range []string{
		`tenantcloud_autoscaler_grpc_requests_total{code="OK",method="NodeGroups"} 1`,
		`tenantcloud_operations_total{component="autoscaler-provider",operation="NodeGroups",outcome="OK"} 1`,
		`tenantcloud_operation_duration_seconds_count{component="autoscaler-provider",operation="NodeGroups",outcome="OK"} 1`,
		`tenantcloud_operations_in_flight{component="autoscaler-provider",operation="NodeGroups"} 0`,
		// The informers' initial LISTs went through the instrumented infra transport.
		`tenantcloud_infra_api_requests_total{code="200",component="autoscaler-provider",method="GET",resource="machinedeployments"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) || err != nil {
			t.Fatalf("exit after SIGTERM: %v; output:\n%s", err, p.logs.output())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	if out := p.logs.output(); !strings.Contains(out, `"Shutting down"`) {
		t.Errorf("no orderly shutdown in the log:\n%s", out)
	}
}

func ptr[T any](v T) *T { return &v }
