// Package adopt_test switches a tenant from the upstream KubeVirt CCM and CSI driver to
// tenantcloud in place, end to end: the management cluster holds an infra Service and a
// DataVolume made as kubevirt/cloud-provider-kubevirt and kubevirt/csi-driver make them
// (test/upstream), the tenant its LoadBalancer Service and the PV; the adopt binary claims them,
// then the real ccm binary keeps the Service's MetalLB address and csi-controller/csi-node
// serve the volume under its legacy handle (the data written before the switch is read back,
// the volume is expanded, snapshotted and deleted).
package adopt_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
)

var (
	env       *harness.Env
	simulator *sim.Sim
	// disksErr says why the simulated guest disks cannot run here (not root, no loops).
	disksErr error
)

const phaseDelay = 20 * time.Millisecond

func TestMain(m *testing.M) {
	var setup harness.Setup
	if disksErr = disks.Supported(); disksErr == nil {
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
	os.Exit(harness.MainWith(m, &env, setup))
}

// requireDisks skips without loop devices, or fails where the disks are required
// (TENANTCLOUD_REQUIRE, set in CI).
func requireDisks(t *testing.T) {
	t.Helper()
	harness.Require(t, harness.NeedDisks, disksErr)
}
