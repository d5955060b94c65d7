// Package grpcmetrics records the gRPC calls of a program's server in pkg/metrics. It is apart
// from pkg/metrics so programs without a gRPC server (the ccm) do not link gRPC.
package grpcmetrics

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/tenantcloud/tenantcloud/pkg/metrics"
)

// UnaryServerInterceptor records every gRPC call as an operation of m named by its method, with
// the status code as outcome. m may be nil.
func UnaryServerInterceptor(m *metrics.Metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		end := m.Begin(metrics.MethodName(info.FullMethod))
		resp, err := handler(ctx, req)
		end(status.Code(err).String())
		return resp, err
	}
}

// ServerOption is the grpc.ServerOption installing UnaryServerInterceptor(m).
func ServerOption(m *metrics.Metrics) grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(UnaryServerInterceptor(m))
}
