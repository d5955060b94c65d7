package autoscaler_test

import (
	"context"
	"testing"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
)

// startProvider runs the provider for scope in-process, served over TCP, and returns a client
// speaking to it as cluster-autoscaler does.
func startProvider(t *testing.T, ctx context.Context, scope infra.Scope) protos.CloudProviderClient {
	t.Helper()
	p, err := fixture.StartProvider(ctx, env.Management.Config, env.Tenant.Config, scope)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p.Client
}
