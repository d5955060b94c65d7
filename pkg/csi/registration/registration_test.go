package registration

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// kubelet dials the registration socket as the kubelet's plugin watcher does.
func kubelet(t *testing.T, sock string) registerapi.RegistrationClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return registerapi.NewRegistrationClient(conn)
}

func start(t *testing.T, ctx context.Context) (string, chan error) {
	t.Helper()
	dir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- New("csi.example.io", "/var/lib/kubelet/plugins/csi.example.io/csi.sock").Run(ctx, dir)
	}()
	return SocketPath(dir, "csi.example.io"), done
}

// TestRegistration walks the kubelet's side: GetInfo names the driver, its node-side
// endpoint and versions; an accepted registration keeps serving; shutdown removes the
// socket (which is how the kubelet learns the driver left).
func TestRegistration(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock, done := start(t, ctx)
	k := kubelet(t, sock)
	callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
	defer callCancel()
	info, err := k.GetInfo(callCtx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != "csi.example.io" ||
		info.GetEndpoint() != "/var/lib/kubelet/plugins/csi.example.io/csi.sock" ||
		strings.Join(info.GetSupportedVersions(), ",") != "1.0.0" {
		t.Errorf("GetInfo = %v", info)
	}
	if _, err := k.NotifyRegistrationStatus(callCtx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Run ended after an accepted registration: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after shutdown: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("registration socket still there after shutdown: %v", err)
	}
}

// TestRefusedRegistrationEndsRun: the kubelet's refusal ends Run with its reason, as
// node-driver-registrar exits, so the pod restarts and registers again.
func TestRefusedRegistrationEndsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock, done := start(t, ctx)
	k := kubelet(t, sock)
	if _, err := k.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: false, Error: "version 0.3 not supported"}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "version 0.3 not supported") {
			t.Errorf("Run = %v, want the kubelet's reason", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not end after the kubelet refused the registration")
	}
}
