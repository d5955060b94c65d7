// Package sanity runs csi-test's sanity suite against the FULL tenantcloud driver: the
// csi-controller on the harness management cluster with the simulated CDI/LINSTOR, KubeVirt,
// virt-api and hot-plug, and csi-node running "inside" a simulated VM (its by-id directory of
// real loop-device disks and its own kubelet directory), so that CreateVolume →
// ControllerPublishVolume → NodeStageVolume (mkfs, mount) → NodePublishVolume → expand →
// unpublish → delete all happen for real.
package sanity

import (
	"os"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

var (
	env  *harness.Env
	sims *fixture.Sims
	// disksErr says why the simulated disks cannot run here (nil if they can).
	disksErr error
)

// phaseDelay is every simulator step: small enough for ~100 specs to run in a couple of
// minutes, large enough that every wait is a real wait on events.
const phaseDelay = 20 * time.Millisecond

// TestMain is harness.Main plus the simulators, which must stop (and release their loop
// devices) before the control planes go away.
func TestMain(m *testing.M) {
	if disksErr = fixture.Supported(); disksErr != nil {
		// Nothing here runs without root and loop devices; do not even start the harness.
		os.Exit(m.Run())
	}
	os.Exit(harness.MainWith(m, &env, fixture.Setup(&sims, fixture.Options{PhaseDelay: phaseDelay}, "sanity-disks-")))
}
