package main

import (
	"context"

	"google.golang.org/grpc"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// The socket handling is shared with csi-controller (pkg/csi); these names keep this
// program's call sites and tests short.

func unixSocketPath(endpoint string) (string, error) { return tccsi.UnixSocketPath(endpoint) }

func removeStaleSocket(path string) error { return tccsi.RemoveStaleSocket(path) }

func serveCSI(ctx context.Context, endpoint string, register func(grpc.ServiceRegistrar), opts ...grpc.ServerOption) error {
	return tccsi.Serve(ctx, endpoint, register, opts...)
}
