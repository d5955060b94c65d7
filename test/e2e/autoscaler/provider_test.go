package autoscaler_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// startProvider runs the provider for scope in-process, served over TCP, and returns a client
// speaking to it as cluster-autoscaler does.
func startProvider(t *testing.T, ctx context.Context, scope infra.Scope) protos.CloudProviderClient {
	t.Helper()
	ic, err := infra.NewWithOptions(env.Management.Config, scope, autoscaler.InfraOptions())
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := autoscaler.NewNodeCache(env.Tenant.Config)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := autoscaler.New(pctx, autoscaler.Config{Infra: ic, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := autoscaler.NewServer(p, nil)
	srv.SetReady()
	go func() { _ = srv.GRPC.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(time.Second) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(autoscaler.Codec())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return protos.NewCloudProviderClient(conn)
}
