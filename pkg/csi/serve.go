package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// ShutdownGrace bounds how long in-flight calls may finish after the serving context ends;
// kubelet's default termination grace period is 30s. Calls still running afterwards are
// cancelled: every CSI call is retried by the CO, so cutting one short is safe.
const ShutdownGrace = 10 * time.Second

// UnixSocketPath returns the socket path of a "unix:///abs/path" endpoint. Only unix sockets
// make sense for CSI plugins: kubelet and the sidecars reach them through a shared volume.
func UnixSocketPath(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("--endpoint %q: %w", endpoint, err)
	}
	if u.Scheme != "unix" {
		return "", fmt.Errorf("--endpoint %q: want unix:///path/to/csi.sock", endpoint)
	}
	p := u.Path
	if u.Host != "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("--endpoint %q: the socket path must be absolute (unix:///path/to/csi.sock)", endpoint)
	}
	return filepath.Clean(p), nil
}

// RemoveStaleSocket deletes a socket left by a previous run, which would make listen fail. It
// refuses to delete anything that is not a socket.
func RemoveStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	klog.InfoS("Removing stale socket", "path", path)
	return os.Remove(path)
}

// Serve serves the services register adds on the unix socket endpoint until ctx ends, then
// stops gracefully (ShutdownGrace) and removes the socket. A stale socket at the path is
// replaced. It returns nil after a shutdown caused by ctx, an error if serving failed. opts are
// added to the server's (e.g. a metrics interceptor, which then sees every call first).
func Serve(ctx context.Context, endpoint string, register func(grpc.ServiceRegistrar), opts ...grpc.ServerOption) error {
	path, err := UnixSocketPath(endpoint)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if err := RemoveStaleSocket(path); err != nil {
		return err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", endpoint, err)
	}
	defer func() {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			klog.ErrorS(err, "Removing socket", "path", path)
		}
	}()

	srv := grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(LogCalls))...)
	register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	klog.InfoS("Serving CSI", "endpoint", endpoint)

	select {
	case err := <-served:
		return fmt.Errorf("serving %s: %w", endpoint, err)
	case <-ctx.Done():
	}
	klog.InfoS("Shutting down", "grace", ShutdownGrace)
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(ShutdownGrace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		klog.InfoS("Calls still running after the grace period; cancelling them")
		srv.Stop()
		<-stopped
	}
	<-served
	return nil
}

// LogCalls is a gRPC interceptor that logs every call with its outcome. Requests are not
// logged: they can carry secrets. Successful calls are at V(4) because the livenessprobe
// sidecar probes every few seconds; the services log what they changed themselves.
func LogCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	logger := klog.FromContext(ctx).WithValues("method", info.FullMethod)
	resp, err := handler(klog.NewContext(ctx, logger), req)
	if err != nil {
		var volumeID string
		if r, ok := req.(interface{ GetVolumeId() string }); ok {
			volumeID = r.GetVolumeId()
		}
		logger.Error(err, "CSI call failed", "code", status.Code(err), "volumeID", volumeID, "duration", time.Since(start))
	} else {
		logger.V(4).Info("CSI call", "duration", time.Since(start))
	}
	return resp, err
}
