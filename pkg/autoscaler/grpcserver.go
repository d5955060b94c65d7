package autoscaler

import (
	"context"
	"crypto/tls"
	"fmt"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/klog/v2"
)

// ServiceName is the fully qualified gRPC service name, also used for its health status.
const ServiceName = "clusterautoscaler.cloudprovider.v1.externalgrpc.CloudProvider"

// Server is the gRPC server of a Provider plus its health service.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	ready  atomic.Bool
}

// NewServer builds the gRPC server for p. tlsConfig nil serves plaintext. Reflection is not
// registered: the API is fixed by the proto, and listing services would only help a prober.
// The server answers Unavailable (and its health NOT_SERVING) until SetReady, so nothing is
// served from caches that have not synced. extra options come first, so an interceptor among
// them (metrics) sees every call, refused ones included.
func NewServer(p *Provider, tlsConfig *tls.Config, extra ...grpc.ServerOption) *Server {
	s := &Server{Health: health.NewServer()}
	codec := wireCodec{}
	if p.table != nil {
		codec.encoded = p.table.encoded
	}
	opts := append(extra,
		grpc.ForceServerCodec(codec),
		grpc.ChainUnaryInterceptor(recoverPanics, observe, s.gate),
		// CA sends one request at a time per call site; this bounds a misbehaving client.
		grpc.MaxRecvMsgSize(16<<20),
	)
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	s.GRPC = grpc.NewServer(opts...)
	protos.RegisterCloudProviderServer(s.GRPC, p)
	healthpb.RegisterHealthServer(s.GRPC, s.Health)
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.Health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

// SetReady opens the CloudProvider service, once the provider's caches have synced.
func (s *Server) SetReady() {
	s.ready.Store(true)
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.Health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// Stop drains in-flight calls for up to grace, then closes every connection.
func (s *Server) Stop(grace time.Duration) {
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		klog.InfoS("gRPC calls still running after the grace period; closing them", "grace", grace)
		s.GRPC.Stop()
		<-done
	}
}

func (s *Server) gate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !s.ready.Load() && !strings.HasPrefix(info.FullMethod, "/"+healthpb.Health_ServiceDesc.ServiceName+"/") {
		return nil, status.Error(codes.Unavailable, "caches are still syncing; retry shortly")
	}
	return handler(ctx, req)
}

// recoverPanics turns a panicking handler into an Internal error instead of killing the
// process (and with it every node group's autoscaling).
func recoverPanics(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(fmt.Errorf("panic: %v", r), "gRPC handler panicked", "method", info.FullMethod, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "%s: internal error", info.FullMethod)
		}
	}()
	return handler(ctx, req)
}

// observe records metrics and logs failures: loudly for server-side ones, verbosely for
// answers that are part of the protocol (Unimplemented, NotFound, refused requests).
func observe(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	took := time.Since(start)
	code := status.Code(err)
	recordRPC(info.FullMethod, code, took)
	switch code {
	case codes.OK:
		// Checked first: the arguments of a disabled V(5) line are still boxed, and this is
		// every call's path.
		if v := klog.V(5); v.Enabled() {
			v.InfoS("gRPC call", "method", info.FullMethod, "took", took)
		}
	case codes.Internal, codes.Unavailable, codes.Unknown, codes.PermissionDenied, codes.DeadlineExceeded:
		klog.ErrorS(err, "gRPC call failed", "method", info.FullMethod, "code", code, "took", took)
	case codes.Unimplemented:
		klog.V(5).InfoS("gRPC call answered Unimplemented", "method", info.FullMethod, "err", err)
	default:
		klog.V(2).InfoS("gRPC call refused", "method", info.FullMethod, "code", code, "err", err)
	}
	return resp, err
}
