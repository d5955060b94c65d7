package csicontroller_test

import (
	"context"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/test/sim/cdi"
	"github.com/tenantcloud/tenantcloud/test/sim/hotplug"
	"github.com/tenantcloud/tenantcloud/test/sim/virtapi"
)

// TestRestartSafety stops the controller in the middle of CreateVolume and of
// ControllerPublishVolume (as a crash or a rollout would) and repeats the calls against a fresh
// controller: they converge on the objects the first attempt made, with no duplicates.
func TestRestartSafety(t *testing.T) {
	tn := newTenant(t, "csi-restart", "restart", fixtureStorage())
	tn.vm("restart-w1")

	t.Run("CreateVolume", func(t *testing.T) {
		succeeded := cdi.FaultDataVolume(string(cdiv1.Succeeded))
		sims.Faults.Stall(succeeded)
		t.Cleanup(func() { sims.Faults.Release(succeeded) })

		id := controller.VolumeID(tn.cluster, "pvc-crash")
		done := make(chan error, 1)
		go func() {
			_, err := tn.cc().CreateVolume(context.Background(), createReq("pvc-crash", 32*mib))
			done <- err
		}()
		dv := &cdiv1.DataVolume{}
		eventually(t, "DataVolume populating", func(ctx context.Context) (bool, error) {
			err := kube().Get(ctx, client.ObjectKey{Namespace: tn.ns, Name: id}, dv)
			return err == nil && dv.Status.Phase == cdiv1.ImportInProgress, client.IgnoreNotFound(err)
		})
		firstUID := dv.UID

		tn.stop() // mid-call
		err := <-done
		if err == nil {
			t.Fatal("CreateVolume finished although the DataVolume could not succeed")
		}
		t.Logf("CreateVolume cut short by the stop: %v", err)

		tn.start()
		// Retried while CDI is still busy: the caller's deadline passes, the volume is in
		// progress; nothing new is created.
		short, cancel := context.WithTimeout(context.Background(), 3*phaseDelay)
		_, err = tn.cc().CreateVolume(short, createReq("pvc-crash", 32*mib))
		cancel()
		if code := status.Code(err); code != codes.DeadlineExceeded {
			t.Fatalf("retry while populating: %v, want DeadlineExceeded", err)
		}
		sims.Faults.Release(succeeded)
		// The cut-short retry may still hold the volume for a moment: ABORTED, retried as a
		// CO does.
		vol := tn.createRetryingAborted("pvc-crash", 32*mib)
		if vol.GetVolumeId() != id || vol.GetCapacityBytes() != 32*mib {
			t.Fatalf("converged volume %v", vol)
		}
		n := 0
		for _, d := range dataVolumes(t, tn.ns) {
			if d.Annotations[controller.AnnVolumeName] == "pvc-crash" {
				n++
				if d.UID != firstUID {
					t.Fatalf("DataVolume was recreated: UID %s, first %s", d.UID, firstUID)
				}
			}
		}
		if n != 1 {
			t.Fatalf("%d DataVolumes for pvc-crash, want 1", n)
		}
	})

	t.Run("ControllerPublishVolume", func(t *testing.T) {
		id := tn.create("pvc-crash-pub", 16*mib).GetVolumeId()
		ready := hotplug.FaultPoint(kubevirtv1.VolumeReady)
		sims.Faults.Stall(ready)
		t.Cleanup(func() { sims.Faults.Release(ready) })

		done := make(chan error, 1)
		go func() { _, err := tn.publish(id, "restart-w1", nil); done <- err }()
		eventually(t, "hot-plug in progress", func(context.Context) (bool, error) {
			for _, st := range getVMI(t, tn.ns, "restart-w1").Status.VolumeStatus {
				if st.Name == id && st.Phase == kubevirtv1.HotplugVolumeMounted {
					return true, nil
				}
			}
			return false, nil
		})
		tn.stop()
		if err := <-done; err == nil {
			t.Fatal("publish finished although the volume could not become Ready")
		}
		tn.start()
		sims.Faults.Release(ready)
		tn.mustPublish(id, "restart-w1", nil)
		count := func(vols []kubevirtv1.Volume) int {
			n := 0
			for _, v := range vols {
				if v.Name == id {
					n++
				}
			}
			return n
		}
		if n := count(getVM(t, tn.ns, "restart-w1").Spec.Template.Spec.Volumes); n != 1 {
			t.Fatalf("volume %d times in the VM spec", n)
		}
		if n := count(getVMI(t, tn.ns, "restart-w1").Spec.Volumes); n != 1 {
			t.Fatalf("volume %d times in the VMI spec", n)
		}
		// Unpublish, stop mid-unplug, and converge again.
		unplugged := hotplug.FaultPoint(kubevirtv1.HotplugVolumeDetaching)
		sims.Faults.Stall(unplugged)
		t.Cleanup(func() { sims.Faults.Release(unplugged) })
		go func() { done <- tn.unpublish(id, "restart-w1") }()
		eventually(t, "unplug in progress", func(context.Context) (bool, error) {
			for _, st := range getVMI(t, tn.ns, "restart-w1").Status.VolumeStatus {
				if st.Name == id && st.Phase == kubevirtv1.HotplugVolumeUnMounted {
					return true, nil
				}
			}
			return false, nil
		})
		tn.stop()
		if err := <-done; err == nil {
			t.Fatal("unpublish finished although the volume could not detach")
		}
		tn.start()
		sims.Faults.Release(unplugged)
		if err := tn.unpublish(id, "restart-w1"); err != nil {
			t.Fatal(err)
		}
		if hasVolume(getVMI(t, tn.ns, "restart-w1"), id) {
			t.Fatal("volume still on the VMI")
		}
		if _, err := tn.cc().DeleteVolume(callCtx(t), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPublishConverges: a hot-plug that virt-api failed transiently is retried within the call,
// and one that reached the VM spec but not the running instance (virt-api died between the two
// writes, or lost a write conflict on a busy VMI) is completed at the instance level on the
// next call. The same for unplugs.
func TestPublishConverges(t *testing.T) {
	tn := newTenant(t, "csi-converge", "converge", fixtureStorage())
	tn.vm("conv-w1")

	t.Run("transient virt-api failures", func(t *testing.T) {
		id := tn.create("pvc-transient", 16*mib).GetVolumeId()
		sims.Faults.FailNext(virtapi.FaultAddVolume, 2)
		tn.mustPublish(id, "conv-w1", nil)
		sims.Faults.FailNext(virtapi.FaultRemoveVolume, 2)
		if err := tn.unpublish(id, "conv-w1"); err != nil {
			t.Fatal(err)
		}
		if hasVolume(getVMI(t, tn.ns, "conv-w1"), id) || vmHasVolume(getVM(t, tn.ns, "conv-w1"), id) {
			t.Fatal("volume still attached")
		}
	})

	t.Run("VM has the volume, the instance does not", func(t *testing.T) {
		id := tn.create("pvc-half", 16*mib).GetVolumeId()
		// What a VM-level addvolume leaves when only its first write landed.
		mutateVM(t, tn.ns, "conv-w1", func(vm *kubevirtv1.VirtualMachine) {
			spec := &vm.Spec.Template.Spec
			spec.Volumes = append(spec.Volumes, kubevirtv1.Volume{Name: id, VolumeSource: kubevirtv1.VolumeSource{
				DataVolume: &kubevirtv1.DataVolumeSource{Name: id, Hotpluggable: true}}})
			spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, kubevirtv1.Disk{Name: id, Serial: tccsi.Serial(id),
				DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusSCSI}}})
		})
		pc := tn.mustPublish(id, "conv-w1", nil)
		if pc[tccsi.PublishContextSerial] != tccsi.Serial(id) {
			t.Fatalf("publish context %v", pc)
		}
		vmi := getVMI(t, tn.ns, "conv-w1")
		if !specHasVolume(&vmi.Spec, id) {
			t.Fatal("instance lacks the volume after publish")
		}

		// The reverse: the instance still has it, the VM no longer does.
		mutateVM(t, tn.ns, "conv-w1", func(vm *kubevirtv1.VirtualMachine) {
			spec := &vm.Spec.Template.Spec
			spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v kubevirtv1.Volume) bool { return v.Name == id })
			spec.Domain.Devices.Disks = slices.DeleteFunc(spec.Domain.Devices.Disks, func(d kubevirtv1.Disk) bool { return d.Name == id })
		})
		if err := tn.unpublish(id, "conv-w1"); err != nil {
			t.Fatal(err)
		}
		if hasVolume(getVMI(t, tn.ns, "conv-w1"), id) {
			t.Fatal("instance still has the volume after unpublish")
		}
	})
}

func mutateVM(t *testing.T, ns, name string, f func(*kubevirtv1.VirtualMachine)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vm := getVM(t, ns, name)
		f(vm)
		return kube().Update(testCtx(t), vm)
	})
	if err != nil {
		t.Fatal(err)
	}
}
