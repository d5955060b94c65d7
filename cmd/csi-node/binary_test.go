package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/scrape"
)

// runningNode is the real csi-node binary serving on a socket in a temp dir.
type runningNode struct {
	cmd    *exec.Cmd
	sock   string
	out    *scrape.Output
	exited chan error
	conn   *grpc.ClientConn
}

// metricsURL is the node's /metrics, from its log.
func (n *runningNode) metricsURL(tb testing.TB) string {
	u, err := scrape.MetricsURL(n.out.String())
	if err != nil {
		tb.Fatalf("%v:\n%s", err, n.out)
	}
	return u
}

// startNode builds and starts csi-node (version stamped in), optionally over a stale socket,
// and returns once it answers GetPluginInfo. Cleanup kills it if the caller did not stop it.
func startNode(tb testing.TB, version string, stale bool) *runningNode {
	tb.Helper()
	_, err := exec.LookPath("go")
	harness.Require(tb, harness.NeedTool, err)
	dir := tb.TempDir()
	bin := filepath.Join(dir, "csi-node")
	// Built as make build and make images build it (static, -trimpath, -s -w), so the binary
	// measured is the one the image ships: a cgo build links the C library dynamically and its
	// RSS counts ld.so's and libc's pages too (+1.7 MB of RssFile idle, measured 2026-12-07).
	if err := harness.GoBuild(tb.Context(), bin, []string{"CGO_ENABLED=0"},
		[]string{"-trimpath", "-ldflags", "-s -w -X github.com/tenantcloud/tenantcloud/pkg/version.Version=" + version},
		"github.com/tenantcloud/tenantcloud/cmd/csi-node"); err != nil {
		tb.Fatal(err)
	}
	n := &runningNode{sock: filepath.Join(dir, "plugin", "csi.sock"), out: &scrape.Output{}, exited: make(chan error, 1)}
	if err := os.MkdirAll(filepath.Dir(n.sock), 0o750); err != nil {
		tb.Fatal(err)
	}
	if stale {
		staleSocket(tb, n.sock)
	}
	kubelet := filepath.Join(dir, "kubelet")
	if err := os.Mkdir(kubelet, 0o750); err != nil {
		tb.Fatal(err)
	}
	n.cmd = exec.Command(bin, "--config", writeConfig(tb), "--node-id", "vm-7",
		"--endpoint", "unix://"+n.sock, "--device-dir", filepath.Join(dir, "by-id"),
		"--kubelet-dir", kubelet, "--max-volumes-per-node", "5", "-v", "4",
		"--metrics-bind-address", "127.0.0.1:0")
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	n.cmd.Env = append(os.Environ(), nodeNameEnv+"=") // the flag must be enough
	if err := n.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { n.exited <- n.cmd.Wait() }()
	tb.Cleanup(func() {
		if n.cmd.ProcessState == nil {
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	})
	if n.conn, err = grpc.NewClient("unix://"+n.sock, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.conn.Close() })
	// A stale socket may exist from the start, so wait for a real answer, not for the file.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := csi.NewIdentityClient(n.conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		tb.Fatalf("GetPluginInfo: %v\noutput:\n%s", err, n.out)
	}
	if info.GetName() != tccsi.DriverName || info.GetVendorVersion() != version {
		tb.Errorf("GetPluginInfo = %v, want %s %s", info, tccsi.DriverName, version)
	}
	return n
}

// TestBinaryServes runs the real csi-node with a config and --node-id, talks CSI to it over
// its socket, then stops it with SIGTERM and checks that it exits cleanly and removes the
// socket. A stale socket left at the path beforehand must not stop it from starting.
func TestBinaryServes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	n := startNode(t, "v0.0.0-nodetest", true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	probe, err := csi.NewIdentityClient(n.conn).Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want ready", probe, err)
	}
	ni, err := csi.NewNodeClient(n.conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatalf("NodeGetInfo: %v", err)
	}
	if ni.GetNodeId() != "vm-7" || ni.GetMaxVolumesPerNode() != 5 || ni.GetAccessibleTopology() != nil {
		t.Errorf("NodeGetInfo = %v, want vm-7, 5 volumes, no topology", ni)
	}
	if _, err := csi.NewNodeClient(n.conn).NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty NodeStageVolume: %v, want InvalidArgument", err)
	}
	metrics := scrapeText(t, n.metricsURL(t))
	for _, want := range []string{
		`tenantcloud_operations_total{component="csi-node",operation="NodeGetInfo",outcome="OK"} 1`,
		`tenantcloud_operations_total{component="csi-node",operation="NodeStageVolume",outcome="InvalidArgument"} 1`,
		`tenantcloud_operation_duration_seconds_count{component="csi-node",operation="NodeGetInfo",outcome="OK"} 1`,
		`tenantcloud_operations_in_flight{component="csi-node",operation="NodeStageVolume"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}

	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-n.exited:
		if err != nil {
			t.Errorf("csi-node exited with %v after SIGTERM, want 0; output:\n%s", err, n.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("csi-node did not exit within 20s of SIGTERM; output:\n%s", n.out)
	}
	if _, err := os.Lstat(n.sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind after shutdown: %v", n.sock, err)
	}
	for _, want := range []string{"Removing stale socket", "Serving CSI", "Shutting down"} {
		if !bytes.Contains(n.out.Bytes(), []byte(want)) {
			t.Errorf("log lacks %q:\n%s", want, n.out)
		}
	}
}

func scrapeText(tb testing.TB, url string) string {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}

// BenchmarkIdleRSS reports the resident memory of a csi-node that has answered a few calls
// and sits idle, as it does on every tenant node between volume operations: the static binary
// the image ships (startNode).
func BenchmarkIdleRSS(b *testing.B) {
	n := startNode(b, "v0.0.0-bench", false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for b.Loop() {
		if _, err := csi.NewNodeClient(n.conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	stats.ReportRSS(b, "csi-node", n.cmd.Process.Pid)
}
