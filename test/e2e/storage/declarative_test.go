package storage

import (
	"testing"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/test/sim/kubevirt"
	"github.com/tenantcloud/tenantcloud/test/sim/virtapi"
)

// TestDeclarativeHotplugStories runs the user stories that attach volumes again with
// declarative hot-plug (issue 18 item 4): csi-controller restarted with
// storage.hotplug=declarative and the simulated KubeVirt with DeclarativeHotplugVolumes alone,
// as an operator switches. The same real nodes, kubelets, sidecars and csi-node pods; only how
// the disks reach the VMs differs: csi-controller patches the VM spec and KubeVirt's VM
// controller carries it into the running VMI. That this path, and not virt-api's, did the
// work is checked on the simulator's counters: no addvolume/removevolume request reached
// virt-api, and the VM controller hot-plugged spec changes. The refused-claims story is not
// repeated: nothing in it reaches hot-plug.
func TestDeclarativeHotplugStories(t *testing.T) {
	w := requireWorld(t)
	w.useHotplug(t, config.HotplugDeclarative)
	faults := w.sim.Faults
	subresource := func() int { return faults.Hits(virtapi.FaultAddVolume) + faults.Hits(virtapi.FaultRemoveVolume) }
	viaAPI, viaSpec := subresource(), faults.Hits(kubevirt.FaultVMHotplug)

	for _, story := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"VolumeWritten", TestVolumeWritten},
		{"VolumeFollowsPod", TestVolumeFollowsPod},
		{"ExpandWhileRunning", TestExpandWhileRunning},
		{"SharedBlockVolume", TestSharedBlockVolume},
		{"SnapshotAndClone", TestSnapshotAndClone},
	} {
		t.Run(story.name, story.run)
	}

	if n := subresource() - viaAPI; n != 0 {
		t.Errorf("%d addvolume/removevolume requests reached virt-api in declarative mode", n)
	}
	if n := faults.Hits(kubevirt.FaultVMHotplug) - viaSpec; n == 0 {
		t.Error("KubeVirt's VM controller hot-plugged no VM spec change: the stories did not use the declarative path")
	} else {
		t.Logf("KubeVirt's VM controller carried %d VM spec changes into running VMIs", n)
	}
}
