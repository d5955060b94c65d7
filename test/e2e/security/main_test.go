// Package security_test attacks the tenant boundary of DESIGN.md §2 end to end. Each test
// row acts as a hostile admin of tenant cluster "alpha" against the real components (the ccm
// binary, csi-controller, csi-node and autoscaler-provider, all with admin credentials on the
// management cluster, so that only their own checks stand between the tenant and the infra)
// on the harness control planes and the simulator. The management cluster also holds cluster
// "beta" (same infra namespace) and cluster "gamma" (another namespace) with VMs, volumes, a
// snapshot, Machines and a load balancer, so every "another tenant's object" an attack names
// really exists. A row asserts the refusal (gRPC code, Warning Event, no status) and that no
// infra object changed, and the run ends with a table of every attack and its result.
package security_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim"
)

var (
	env       *harness.Env
	simulator *sim.Sim
	// disksErr says why the simulated guest disks cannot run here (not root, no loops).
	disksErr error
)

// phaseDelay is every simulated step: small for the package's time budget, not zero so that
// waits really wait for events.
const phaseDelay = 20 * time.Millisecond

func TestMain(m *testing.M) {
	var setup harness.Setup
	if disksErr = fixture.Supported(); disksErr == nil {
		setup = func(e *harness.Env) (func() error, error) {
			s, err := sim.Start(context.Background(), e, sim.Options{
				ClusterName: cluster, ExternalCloudProvider: true, MetalLB: true, Disks: true, PhaseDelay: phaseDelay,
			})
			if err != nil {
				return nil, err
			}
			simulator = s
			return s.Stop, nil
		}
	}
	// A dual-stack tenant on a single-stack (IPv4) management cluster: the tenant can ask for
	// both families, which the infra cannot serve (attacks 5h-5j).
	os.Exit(harness.MainWithOptions(m, &env, harness.Options{TenantDualStack: true}, setup))
}
