package virtapi

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

func pvcVolume(name, claim string, hot bool) kubevirtv1.Volume {
	return kubevirtv1.Volume{Name: name, VolumeSource: kubevirtv1.VolumeSource{PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{
		PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}, Hotpluggable: hot,
	}}}
}

func TestVerifyAddAndRemove(t *testing.T) {
	volumes := []kubevirtv1.Volume{
		{Name: "root", VolumeSource: kubevirtv1.VolumeSource{ContainerDisk: &kubevirtv1.ContainerDiskSource{Image: "x"}}},
		pvcVolume("boot-data", "pvc-boot", false),
		pvcVolume("hot", "pvc-hot", true),
		{Name: "dv", VolumeSource: kubevirtv1.VolumeSource{DataVolume: &kubevirtv1.DataVolumeSource{Name: "dv-1", Hotpluggable: true}}},
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"add new", verifyAdd(volumes, pvcOptions("new", "pvc-new", "", "")), ""},
		{"add taken name", verifyAdd(volumes, pvcOptions("hot", "pvc-new", "", "")), "Unable to add volume [hot] because volume with that name already exists"},
		{"add taken claim", verifyAdd(volumes, pvcOptions("new", "pvc-boot", "", "")), "Unable to add volume source [pvc-boot] because it already exists"},
		{"add taken DataVolume as claim", verifyAdd(volumes, pvcOptions("new", "dv-1", "", "")), "[dv-1]"},
		{"remove hotplugged", verifyRemove(volumes, "hot"), ""},
		{"remove by claim name", verifyRemove(volumes, "pvc-hot"), ""},
		{"remove absent", verifyRemove(volumes, "nope"), "Unable to remove volume [nope] because it does not exist"},
		{"remove boot volume", verifyRemove(volumes, "boot-data"), "Unable to remove volume [boot-data] because it is not hotpluggable"},
		{"remove container disk", verifyRemove(volumes, "root"), "not hotpluggable"},
	} {
		if tc.want == "" && tc.err != nil || tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want)) {
			t.Errorf("%s: got %v, want %q", tc.name, tc.err, tc.want)
		}
	}
}

func TestHotplugDiskCauses(t *testing.T) {
	yes := true
	for _, tc := range []struct {
		name string
		disk kubevirtv1.Disk
		want string
	}{
		{"virtio", kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: "virtio"}}}, ""},
		{"scsi", kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: "scsi"}}}, ""},
		{"sata", kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: "sata"}}}, "requires bus to be 'scsi' or 'virtio'. [sata] is not permitted."},
		{"unset bus", kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{}}}, "[] is not permitted"},
		{"scsi lun", kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{LUN: &kubevirtv1.LunTarget{Bus: "scsi"}}}, ""},
		{"virtio lun", kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{LUN: &kubevirtv1.LunTarget{Bus: "virtio"}}}, "for LUN [v] requires bus to be 'scsi'"},
		{"cdrom", kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{CDRom: &kubevirtv1.CDRomTarget{}}}, "requires diskDevice of type 'disk' or 'lun'"},
		{"iothread on scsi", kubevirtv1.Disk{DedicatedIOThread: &yes, DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: "scsi"}}}, "requires virtio bus for IOThreads"},
	} {
		causes := hotplugDiskCauses(&tc.disk, "v", "AddVolume request")
		switch {
		case tc.want == "" && causes != nil:
			t.Errorf("%s: refused: %v", tc.name, causes)
		case tc.want != "" && (len(causes) != 1 || !strings.Contains(causes[0].Message, tc.want)):
			t.Errorf("%s: causes %v, want %q", tc.name, causes, tc.want)
		}
	}
}

func TestApplyAddAndRemove(t *testing.T) {
	spec := kubevirtv1.VirtualMachineInstanceSpec{Volumes: []kubevirtv1.Volume{pvcVolume("root", "pvc-root", false)}}
	opts := pvcOptions("data", "pvc-data", "serial-1", kubevirtv1.DiskBusSCSI)
	if serr := checkAddOptions(opts); serr != nil {
		t.Fatal(serr)
	}
	applyAdd(&spec, opts)
	applyAdd(&spec, opts) // idempotent, as ApplyVolumeRequestOnVMISpec
	if len(spec.Volumes) != 2 || len(spec.Domain.Devices.Disks) != 1 {
		t.Fatalf("after add: %+v", spec)
	}
	v, d := spec.Volumes[1], spec.Domain.Devices.Disks[0]
	if !v.PersistentVolumeClaim.Hotpluggable || d.Name != "data" || d.Serial != "serial-1" || d.Disk.Bus != kubevirtv1.DiskBusSCSI {
		t.Fatalf("added %+v / %+v", v, d)
	}
	if applyRemove(&spec, "pvc-data") {
		t.Fatal("removal by claim name removed something; upstream matches volume names only")
	}
	if !applyRemove(&spec, "data") || len(spec.Volumes) != 1 || len(spec.Domain.Devices.Disks) != 0 {
		t.Fatalf("after remove: %+v", spec)
	}
}

func TestSerialCauses(t *testing.T) {
	disks := []kubevirtv1.Disk{{Serial: "ok-1.2_3+4"}, {Serial: "has space"}, {Serial: strings.Repeat("a", 257)}}
	causes := serialCauses(disks, "spec.domain.devices.disks")
	if len(causes) != 2 || causes[0].Field != "spec.domain.devices.disks[1].serial" || causes[1].Field != "spec.domain.devices.disks[2].serial" {
		t.Fatalf("causes = %+v", causes)
	}
}
