// Package tenantdeleted_test shows that a deleted tenant leaves nothing behind: the infra
// objects tenantcloud created for it carry an owner reference to its Cluster API Cluster, and
// the management cluster's real garbage collector (kube-controller-manager) removes them when
// the Cluster is deleted, while another tenant's objects and a retained tenant's DataVolumes
// stay.
package tenantdeleted_test

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
	// disksErr says why the simulated disks cannot run here (not root, no loop devices).
	disksErr error
)

// TestMain is harness.Main plus the simulated KubeVirt, virt-api, hot-plug and CDI.
func TestMain(m *testing.M) {
	var setup harness.Setup
	if disksErr = fixture.Supported(); disksErr == nil {
		setup = fixture.Setup(&sims, fixture.Options{PhaseDelay: 50 * time.Millisecond}, "tenantdeleted-e2e-disks-")
	}
	os.Exit(harness.MainWith(m, &env, setup))
}
