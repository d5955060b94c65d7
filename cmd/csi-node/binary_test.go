package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// TestBinaryServes builds the real csi-node, runs it with a config and --node-id, talks CSI to
// it over its socket, then stops it with SIGTERM and checks that it exits cleanly and removes
// the socket. A stale socket left at the path beforehand must not stop it from starting.
func TestBinaryServes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not in PATH: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "csi-node")
	const testVersion = "v0.0.0-nodetest"
	build := exec.Command(goTool, "build", "-o", bin,
		"-ldflags", "-X github.com/tenantcloud/tenantcloud/pkg/version.Version="+testVersion, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	sock := filepath.Join(dir, "plugin", "csi.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		t.Fatal(err)
	}
	staleSocket(t, sock)
	kubelet := filepath.Join(dir, "kubelet")
	if err := os.Mkdir(kubelet, 0o750); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "--config", writeConfig(t), "--node-id", "vm-7",
		"--endpoint", "unix://"+sock, "--device-dir", filepath.Join(dir, "by-id"),
		"--kubelet-dir", kubelet, "--max-volumes-per-node", "5", "-v", "4")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), nodeNameEnv+"=") // the flag must be enough
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// The stale socket exists from the start, so wait for a real answer, not for the file.
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("GetPluginInfo: %v\noutput:\n%s", err, &out)
	}
	if info.GetName() != tccsi.DriverName || info.GetVendorVersion() != testVersion {
		t.Errorf("GetPluginInfo = %v, want %s %s", info, tccsi.DriverName, testVersion)
	}
	probe, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want ready", probe, err)
	}
	ni, err := csi.NewNodeClient(conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatalf("NodeGetInfo: %v", err)
	}
	if ni.GetNodeId() != "vm-7" || ni.GetMaxVolumesPerNode() != 5 || ni.GetAccessibleTopology() != nil {
		t.Errorf("NodeGetInfo = %v, want vm-7, 5 volumes, no topology", ni)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) || err != nil {
			t.Errorf("csi-node exited with %v after SIGTERM, want 0; output:\n%s", err, &out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("csi-node did not exit within 20s of SIGTERM; output:\n%s", &out)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind after shutdown: %v", sock, err)
	}
	for _, want := range []string{"Removing stale socket", "Serving CSI", "Shutting down"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("log lacks %q:\n%s", want, &out)
		}
	}
}
