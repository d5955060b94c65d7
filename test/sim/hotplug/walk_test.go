package hotplug

import (
	"reflect"
	"testing"

	kubevirtv1 "kubevirt.io/api/core/v1"
)

func TestNextPhase(t *testing.T) {
	for _, tc := range []struct {
		from   kubevirtv1.VolumePhase
		inSpec bool
		want   kubevirtv1.VolumePhase
		ok     bool
	}{
		{phaseNone, true, kubevirtv1.VolumePending, true},
		{kubevirtv1.VolumePending, true, kubevirtv1.VolumeBound, true},
		{kubevirtv1.VolumeBound, true, kubevirtv1.HotplugVolumeAttachedToNode, true},
		{kubevirtv1.HotplugVolumeAttachedToNode, true, kubevirtv1.HotplugVolumeMounted, true},
		{kubevirtv1.HotplugVolumeMounted, true, kubevirtv1.VolumeReady, true},
		{kubevirtv1.VolumeReady, true, kubevirtv1.VolumeReady, false},
		{kubevirtv1.HotplugVolumeDetaching, true, kubevirtv1.VolumePending, true},
		{kubevirtv1.VolumeReady, false, kubevirtv1.HotplugVolumeUnMounted, true},
		{kubevirtv1.HotplugVolumeMounted, false, kubevirtv1.HotplugVolumeUnMounted, true},
		{kubevirtv1.HotplugVolumeUnMounted, false, kubevirtv1.HotplugVolumeDetaching, true},
		{kubevirtv1.HotplugVolumeAttachedToNode, false, kubevirtv1.HotplugVolumeDetaching, true},
		{kubevirtv1.HotplugVolumeDetaching, false, phaseGone, true},
		{kubevirtv1.VolumeBound, false, phaseGone, true},
		{kubevirtv1.VolumePending, false, phaseGone, true},
		{kubevirtv1.MemoryDumpVolumeCompleted, false, kubevirtv1.MemoryDumpVolumeCompleted, false},
	} {
		got, ok := nextPhase(tc.from, tc.inSpec)
		if got != tc.want || ok != tc.ok {
			t.Errorf("nextPhase(%q, inSpec=%v) = %q, %v; want %q, %v", tc.from, tc.inSpec, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMergeVolumeStatusTouchesOnlyItsEntries(t *testing.T) {
	root := kubevirtv1.VolumeStatus{Name: "rootdisk", Target: "vda"}
	hp := func(name string, phase kubevirtv1.VolumePhase) kubevirtv1.VolumeStatus {
		return kubevirtv1.VolumeStatus{Name: name, Phase: phase, HotplugVolume: &kubevirtv1.HotplugVolumeStatus{}}
	}
	bound := hp("b", kubevirtv1.VolumeBound)
	attached := hp("b", kubevirtv1.HotplugVolumeAttachedToNode)
	newA := hp("a", kubevirtv1.VolumePending)
	stale := hp("c", kubevirtv1.HotplugVolumeMounted)
	got := mergeVolumeStatus(
		[]kubevirtv1.VolumeStatus{root, bound, hp("c", kubevirtv1.VolumeReady), hp("d", kubevirtv1.HotplugVolumeDetaching)},
		map[string]update{
			"b": {from: kubevirtv1.VolumeBound, existed: true, status: &attached},
			"a": {from: phaseNone, existed: false, status: &newA},
			// decided when c was MountedToPod; it is Ready now: must be left alone
			"c": {from: kubevirtv1.HotplugVolumeAttachedToNode, existed: true, status: &stale},
			"d": {from: kubevirtv1.HotplugVolumeDetaching, existed: true},
		})
	want := []kubevirtv1.VolumeStatus{newA, attached, hp("c", kubevirtv1.VolumeReady), root}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merge =\n%+v\nwant\n%+v", got, want)
	}
}

func TestTargetNames(t *testing.T) {
	vmi := &kubevirtv1.VirtualMachineInstance{
		Spec: kubevirtv1.VirtualMachineInstanceSpec{
			Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{Disks: []kubevirtv1.Disk{
				{Name: "root", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}}},
				{Name: "cloudinit", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}}},
				{Name: "hot", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusSCSI}}},
			}}},
			Volumes: []kubevirtv1.Volume{
				{Name: "root"}, {Name: "cloudinit"},
				{Name: "hot", VolumeSource: kubevirtv1.VolumeSource{DataVolume: &kubevirtv1.DataVolumeSource{Name: "dv", Hotpluggable: true}}},
			},
		},
		Status: kubevirtv1.VirtualMachineInstanceStatus{VolumeStatus: []kubevirtv1.VolumeStatus{
			{Name: "root", Target: "vda"}, {Name: "other", Target: "sda"},
		}},
	}
	used := usedTargets(vmi)
	if !used["vda"] || !used["vdb"] || !used["sda"] || used["vdc"] {
		t.Fatalf("used = %v", used)
	}
	if got := targetName(kubevirtv1.DiskBusVirtio, used); got != "vdc" {
		t.Fatalf("next virtio target %q, want vdc", got)
	}
	if got := targetName(kubevirtv1.DiskBusSCSI, used); got != "sdb" {
		t.Fatalf("next scsi target %q, want sdb", got)
	}
}
