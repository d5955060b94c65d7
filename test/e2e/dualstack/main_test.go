// Package dualstack_test runs the ccm binary against dual-stack clusters: the harness's
// apiservers with a service CIDR of each family, the simulator's VMs with an address of each
// family, the real MetalLB controller with a pool of each family. A tenant Service asking for
// both families gets a load-balancer address of each, in its own family order; ETP=Local
// endpoints get an infra EndpointSlice per family; tenant Nodes get an InternalIP per family.
// TestDualStackRefusedOnSingleStackInfra starts a second pair of clusters whose management
// side is single-stack, for the requests such an infra cluster cannot serve.
package dualstack_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim"
)

var (
	env       *harness.Env
	simulator *sim.Sim
)

// phaseDelay is every simulated step: small for the package's time budget, not zero so that
// waits really wait for events.
const phaseDelay = 20 * time.Millisecond

func TestMain(m *testing.M) {
	opts := harness.Options{ManagementDualStack: true, TenantDualStack: true}
	os.Exit(harness.MainWithOptions(m, &env, opts, func(e *harness.Env) (func() error, error) {
		s, err := sim.Start(context.Background(), e, sim.Options{
			ClusterName: cluster, ExternalCloudProvider: true, MetalLB: true, PhaseDelay: phaseDelay,
		})
		if err != nil {
			return nil, err
		}
		simulator = s
		return s.Stop, nil
	}))
}
