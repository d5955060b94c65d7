package csicontroller_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
)

// TestLifecycle walks one volume through create → publish → expand → unpublish → delete and
// checks the infra objects and the guest disk at each step.
func TestLifecycle(t *testing.T) {
	tn := newTenant(t, "csi-lifecycle", "life", fixtureStorage())
	tn.vm("life-w1")

	vol := tn.create("pvc-life-1", 64*mib)
	id := vol.GetVolumeId()
	if id != controller.VolumeID("life", "pvc-life-1") || vol.GetCapacityBytes() != 64*mib {
		t.Fatalf("CreateVolume = %v", vol)
	}
	dv := &cdiv1.DataVolume{}
	if err := kube().Get(testCtx(t), client.ObjectKey{Namespace: tn.ns, Name: id}, dv); err != nil {
		t.Fatal(err)
	}
	if dv.Status.Phase != cdiv1.Succeeded || dv.Labels["tenantcloud.io/component"] != "csi-controller" ||
		dv.Annotations[controller.AnnVolumeName] != "pvc-life-1" {
		t.Fatalf("DataVolume %+v / %v / %v", dv.Status, dv.Labels, dv.Annotations)
	}

	pc := tn.mustPublish(id, "life-w1", nil)
	if pc[tccsi.PublishContextSerial] != tccsi.Serial(id) || pc[tccsi.PublishContextBus] != tccsi.BusSCSI {
		t.Fatalf("publish context %v", pc)
	}
	// The guest has the disk, linked by its serial, as csi-node will look for it.
	link := filepath.Join(sims.Disks.DeviceDir(tn.ns, "life-w1"), "scsi-0QEMU_QEMU_HARDDISK_"+tccsi.Serial(id))
	dev, err := filepath.EvalSymlinks(link)
	if err != nil {
		t.Fatalf("guest disk link %s: %v", link, err)
	}
	if size, err := disks.DeviceSize(dev); err != nil || size != 64*mib {
		t.Fatalf("guest disk %s: size %d, %v", dev, size, err)
	}
	vm := getVM(t, tn.ns, "life-w1")
	if !hasDisk(vm.Spec.Template.Spec.Domain.Devices.Disks, id, tccsi.Serial(id)) {
		t.Fatalf("VM template lacks disk %s", id)
	}

	// Online expansion while published: the guest disk grows.
	exp, err := tn.cc().ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{
		VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 96 * mib}, VolumeCapability: rwo})
	if err != nil || exp.GetCapacityBytes() != 96*mib || !exp.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume = %v, %v", exp, err)
	}
	eventually(t, "guest disk grows to 96Mi", func(context.Context) (bool, error) {
		size, err := disks.DeviceSize(dev)
		return size == 96*mib, err
	})
	got, err := tn.cc().ControllerGetVolume(callCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: id})
	if err != nil || got.GetVolume().GetCapacityBytes() != 96*mib || len(got.GetStatus().GetPublishedNodeIds()) != 1 {
		t.Fatalf("ControllerGetVolume = %v, %v", got, err)
	}

	wantCode(t, "DeleteVolume while published", tn.delete(id), codes.FailedPrecondition, "still published to VM(s) [life-w1]")
	if err := tn.unpublish(id, "life-w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Fatalf("guest disk link still there after unpublish: %v", err)
	}
	if hasVolume(getVMI(t, tn.ns, "life-w1"), id) || vmHasVolume(getVM(t, tn.ns, "life-w1"), id) {
		t.Fatal("volume still in VM or VMI after unpublish")
	}
	if err := tn.delete(id); err != nil {
		t.Fatal(err)
	}
	for _, d := range dataVolumes(t, tn.ns) {
		if d.Name == id && d.DeletionTimestamp == nil {
			t.Fatalf("DataVolume %s not deleted", id)
		}
	}
	list, err := tn.cc().ListVolumes(callCtx(t), &csi.ListVolumesRequest{})
	if err != nil || len(list.GetEntries()) != 0 {
		t.Fatalf("ListVolumes after delete = %v, %v", list, err)
	}
}

// TestFilesystemInfra: with storage.volumeMode Filesystem the DataVolume is a Filesystem claim;
// capacity is CDI-aligned (MiB), the claim carries CDI's overhead, and expansion completes once
// the infra side is done even though the claim's filesystem resize waits for a node.
func TestFilesystemInfra(t *testing.T) {
	st := fixtureStorage()
	st.VolumeMode = config.VolumeModeFilesystem
	tn := newTenant(t, "csi-fsinfra", "fsinfra", st)

	vol := tn.create("pvc-fs", 100*mib+1)
	if vol.GetCapacityBytes() != 101*mib {
		t.Fatalf("capacity %d, want 101Mi (1 MiB alignment)", vol.GetCapacityBytes())
	}
	id := vol.GetVolumeId()
	pvc := &corev1.PersistentVolumeClaim{}
	if err := kube().Get(testCtx(t), client.ObjectKey{Namespace: tn.ns, Name: id}, pvc); err != nil {
		t.Fatal(err)
	}
	req := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if pvc.Spec.VolumeMode == nil || *pvc.Spec.VolumeMode != corev1.PersistentVolumeFilesystem || req.Value() <= 101*mib {
		t.Fatalf("claim mode %v request %s: want Filesystem with overhead above 101Mi", pvc.Spec.VolumeMode, req.String())
	}
	exp, err := tn.cc().ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{
		VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 202 * mib}, VolumeCapability: rwo})
	if err != nil || exp.GetCapacityBytes() != 202*mib {
		t.Fatalf("ControllerExpandVolume = %v, %v", exp, err)
	}
	if err := kube().Get(testCtx(t), client.ObjectKey{Namespace: tn.ns, Name: id}, pvc); err != nil {
		t.Fatal(err)
	}
	newReq := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	// The overhead ratio is kept: twice the disk, twice the claim (±1 byte of rounding).
	if d := newReq.Value() - 2*req.Value(); d < -2 || d > 2 {
		t.Fatalf("claim request %d after expansion, want ≈ %d", newReq.Value(), 2*req.Value())
	}
	// A retry answers the same without touching anything.
	again, err := tn.cc().ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{
		VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 202 * mib}, VolumeCapability: rwo})
	if err != nil || again.GetCapacityBytes() != 202*mib {
		t.Fatalf("repeated ControllerExpandVolume = %v, %v", again, err)
	}
	// RWX forces Block even here (live migration needs block).
	rwx := tn.create("pvc-fs-rwx", 16*mib, blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER))
	if err := kube().Get(testCtx(t), client.ObjectKey{Namespace: tn.ns, Name: rwx.GetVolumeId()}, pvc); err != nil {
		t.Fatal(err)
	}
	if *pvc.Spec.VolumeMode != corev1.PersistentVolumeBlock {
		t.Fatalf("RWX claim in mode %s", *pvc.Spec.VolumeMode)
	}
	// A class without allowVolumeExpansion: the apiserver refuses the resize; FAILED_PRECONDITION
	// with the reason.
	fixed := createReq("pvc-fixed", 16*mib)
	fixed.Parameters = map[string]string{"infraStorageClassName": fixture.FixedStorageClass}
	fv, err := tn.cc().CreateVolume(callCtx(t), fixed)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tn.cc().ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{
		VolumeId: fv.GetVolume().GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: 32 * mib}})
	wantCode(t, "expand on a fixed-size class", err, codes.FailedPrecondition, "cannot be resized")
	// ... and nothing was recorded: the volume still reports its real size.
	got, err := tn.cc().ControllerGetVolume(callCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: fv.GetVolume().GetVolumeId()})
	if err != nil || got.GetVolume().GetCapacityBytes() != 16*mib {
		t.Fatalf("after the refused expansion: %v, %v; want 16Mi", got, err)
	}
}
