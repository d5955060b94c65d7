// Package outage takes parts of the system away while work is in flight and checks that the
// work still completes exactly once: the management or the tenant kube-apiserver killed for a
// minute (TestManagementAPIServerOutage, TestTenantAPIServerOutage, and BenchmarkOutageRecovery
// for how soon after the return operations converge), the leading ccm replica
// killed (TestCCMFailover, BenchmarkCCMFailover), a csi-controller replica stopped mid-call
// next to a second one (TestCSIControllerReplicas), and two autoscaler-provider replicas given
// the same call (TestAutoscalerProviderReplicas).
//
// Everything is real except what test/sim plays: both kube-apiservers and etcds (test/harness,
// restarted on the same endpoint), the real MetalLB controller, the ccm binary built from
// cmd/ccm, csi-controller served over gRPC on a unix socket, autoscaler-provider over gRPC on
// loopback, and the simulated CDI, KubeVirt, Cluster API, virt-api and hot-plug with
// loop-device disks. The test plays the CSI sidecars (it calls
// csi-controller and retries a failed call, as external-provisioner and external-attacher do)
// and the kubelet (it restarts a ccm that exited). Duplicates are counted twice: in the
// objects (one infra Service per LoadBalancer, one DataVolume per volume, one hot-plugged
// volume per publish) and in the management apiserver's audit log (successful creates).
package outage

import (
	"os"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

var (
	env   *harness.Env
	sims  *fixture.Sims
	world *World
	// disksErr says why the simulated disks cannot run here (not root, no loop devices).
	disksErr error
)

func TestMain(m *testing.M) {
	var setup harness.Setup
	if disksErr = fixture.Supported(); disksErr == nil {
		setup = setupWorld
	}
	os.Exit(harness.MainWith(m, &env, setup))
}

func needWorld(t testing.TB) {
	t.Helper()
	harness.Require(t, harness.NeedDisks, disksErr)
}
