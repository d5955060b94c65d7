package csicontroller_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/test/sim/hotplug"
)

// TestQuota checks that the configured quotas give a clear RESOURCE_EXHAUSTED before the infra
// cluster is touched, for creation and for expansion, and that freed quota is usable again.
func TestQuota(t *testing.T) {
	st := fixtureStorage()
	st.MaxVolumes = 2
	st.MaxTotalCapacity = "100Mi"
	tn := newTenant(t, "csi-quota", "quota", st)

	a := tn.create("pvc-a", 64*mib).GetVolumeId()
	_, err := tn.cc().CreateVolume(callCtx(t), createReq("pvc-b", 64*mib))
	wantCode(t, "CreateVolume over the capacity quota", err, codes.ResourceExhausted,
		"capacity quota exceeded", "64Mi of 100Mi in use", "storage.maxTotalCapacity")
	tn.create("pvc-c", 32*mib)
	_, err = tn.cc().CreateVolume(callCtx(t), createReq("pvc-d", mib))
	wantCode(t, "CreateVolume over the volume quota", err, codes.ResourceExhausted, "volume quota exceeded: the tenant has 2 of 2 volumes")
	// A retry of an existing volume is not a new volume: no quota needed.
	tn.create("pvc-c", 32*mib)

	_, err = tn.cc().ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{
		VolumeId: a, CapacityRange: &csi.CapacityRange{RequiredBytes: 80 * mib}})
	wantCode(t, "ControllerExpandVolume over the capacity quota", err, codes.ResourceExhausted, "capacity quota exceeded")
	if exp, err := tn.cc().ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{
		VolumeId: a, CapacityRange: &csi.CapacityRange{RequiredBytes: 68 * mib}}); err != nil || exp.GetCapacityBytes() != 68*mib {
		t.Fatalf("expansion within the quota: %v, %v", exp, err)
	}
	capRsp, err := tn.cc().GetCapacity(callCtx(t), &csi.GetCapacityRequest{})
	if err != nil || capRsp.GetAvailableCapacity() != 0 {
		// 2 of 2 volumes: nothing can be created whatever bytes are left.
		t.Fatalf("GetCapacity with the volume quota used up = %v, %v", capRsp, err)
	}

	// Nothing was created for the refused requests.
	if n := len(dataVolumes(t, tn.ns)); n != 2 {
		t.Fatalf("%d DataVolumes, want 2", n)
	}
	if err := tn.delete(a); err != nil {
		t.Fatal(err)
	}
	capRsp, err = tn.cc().GetCapacity(callCtx(t), &csi.GetCapacityRequest{})
	if err != nil || capRsp.GetAvailableCapacity() != 68*mib {
		t.Fatalf("GetCapacity after delete = %v, %v; want 68Mi", capRsp, err)
	}
	tn.create("pvc-b", 64*mib)
	// A disallowed infra class is refused before anything is created.
	req := createReq("pvc-e", mib)
	req.Parameters = map[string]string{"infraStorageClassName": "someone-elses-class"}
	_, err = tn.cc().CreateVolume(callCtx(t), req)
	wantCode(t, "CreateVolume with a class not granted", err, codes.InvalidArgument, `infra StorageClass "someone-elses-class" is not allowed`)
}

// TestQuotaConcurrent: creates racing for the last units of a quota are admitted exactly up
// to it. Admission is a reservation taken under a lock and the API round trips run after it,
// so the refused ones must have counted the admitted ones before the cache held them.
func TestQuotaConcurrent(t *testing.T) {
	st := fixtureStorage()
	st.MaxVolumes = 3
	st.MaxTotalCapacity = "40Mi"
	tn := newTenant(t, "csi-quota-conc", "quotaconc", st)

	race := func(prefix string, n int, size int64) (admitted int, refused []error) {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = tn.cc().CreateVolume(callCtx(t), createReq(fmt.Sprintf("%s-%d", prefix, i), size))
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err == nil {
				admitted++
			} else {
				refused = append(refused, err)
			}
		}
		return admitted, refused
	}
	// 8 × 16Mi against 40Mi: two fit.
	admitted, refused := race("pvc-cap", 8, 16*mib)
	if admitted != 2 {
		t.Fatalf("%d of 8 creates of 16Mi admitted under a 40Mi quota, want 2 (refusals: %v)", admitted, refused)
	}
	for _, err := range refused {
		wantCode(t, "CreateVolume over the capacity quota", err, codes.ResourceExhausted, "capacity quota exceeded")
	}
	// 6 × 1Mi with 2 of 3 volumes taken: one fits.
	admitted, refused = race("pvc-count", 6, mib)
	if admitted != 1 {
		t.Fatalf("%d of 6 creates admitted with 2 of 3 volumes taken, want 1 (refusals: %v)", admitted, refused)
	}
	for _, err := range refused {
		wantCode(t, "CreateVolume over the volume quota", err, codes.ResourceExhausted, "volume quota exceeded: the tenant has 3 of 3 volumes")
	}
	if n := len(dataVolumes(t, tn.ns)); n != 3 {
		t.Fatalf("%d DataVolumes, want 3", n)
	}
}

// TestAccessModes: a single-node volume cannot be published to a second VM, a multi-node
// (RWX Block) one can, and RWX filesystem is refused at creation.
func TestAccessModes(t *testing.T) {
	tn := newTenant(t, "csi-access", "access", fixtureStorage())
	tn.vm("access-w1")
	tn.vm("access-w2")

	rwoVol := tn.create("pvc-rwo", 16*mib).GetVolumeId()
	tn.mustPublish(rwoVol, "access-w1", nil)
	vm2Before := getVM(t, tn.ns, "access-w2").Spec.Template.Spec.Volumes
	_, err := tn.publish(rwoVol, "access-w2", nil)
	wantCode(t, "publish RWO to a second VM", err, codes.FailedPrecondition, "already published to VM [access-w1]")
	if got := getVM(t, tn.ns, "access-w2").Spec.Template.Spec.Volumes; len(got) != len(vm2Before) {
		t.Fatalf("access-w2 changed by the refused publish: %v", got)
	}
	// A multi-node capability on a single-node volume is refused too.
	_, err = tn.publish(rwoVol, "access-w1", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER))
	wantCode(t, "multi-node capability on a single-node volume", err, codes.InvalidArgument, "needs a multi-node volume")
	// Volumes follow pods: unpublish there, publish here.
	if err := tn.unpublish(rwoVol, "access-w1"); err != nil {
		t.Fatal(err)
	}
	tn.mustPublish(rwoVol, "access-w2", nil)

	// RWX block: both VMs at once (live migration).
	mmw := blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	rwxVol := tn.create("pvc-rwx", 16*mib, mmw).GetVolumeId()
	tn.mustPublish(rwxVol, "access-w1", mmw)
	tn.mustPublish(rwxVol, "access-w2", mmw)
	got, err := tn.cc().ControllerGetVolume(callCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: rwxVol})
	if err != nil || len(got.GetStatus().GetPublishedNodeIds()) != 2 {
		t.Fatalf("ControllerGetVolume of the RWX volume = %v, %v", got, err)
	}
	list, err := tn.cc().ListVolumes(callCtx(t), &csi.ListVolumesRequest{MaxEntries: 1})
	if err != nil || len(list.GetEntries()) != 1 || list.GetNextToken() == "" {
		t.Fatalf("ListVolumes page 1 = %v, %v", list, err)
	}
	rest, err := tn.cc().ListVolumes(callCtx(t), &csi.ListVolumesRequest{StartingToken: list.GetNextToken()})
	if err != nil || len(rest.GetEntries()) != 1 || rest.GetNextToken() != "" {
		t.Fatalf("ListVolumes page 2 = %v, %v", rest, err)
	}

	// RWX filesystem is refused with the reason.
	_, err = tn.cc().CreateVolume(callCtx(t), createReq("pvc-rwx-fs", 16*mib, mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)))
	wantCode(t, "RWX filesystem", err, codes.InvalidArgument, "use access type block")

	// Unpublish without a node ID: from every VM.
	if err := tn.unpublish(rwxVol, ""); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []string{"access-w1", "access-w2"} {
		if hasVolume(getVMI(t, tn.ns, vm), rwxVol) || vmHasVolume(getVM(t, tn.ns, vm), rwxVol) {
			t.Fatalf("%s still has %s", vm, rwxVol)
		}
	}
}

// TestConcurrentMultiNodePublish: publishes of one RWX volume to several VMs at once (a live
// migration, a ReadWriteMany Deployment) run side by side; only a second call for the same VM,
// or another operation on the volume, is ABORTED while they run.
func TestConcurrentMultiNodePublish(t *testing.T) {
	tn := newTenant(t, "csi-rwx-concurrent", "rwxc", fixtureStorage())
	vms := []string{"rwxc-w1", "rwxc-w2"}
	for _, vm := range vms {
		tn.vm(vm)
	}
	mmw := blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	vol := tn.create("pvc-rwx-concurrent", 16*mib, mmw).GetVolumeId()

	// Both publishes stop short of Ready, so each is still running when the next one starts.
	ready := hotplug.FaultPoint(kubevirtv1.VolumeReady)
	sims.Faults.Stall(ready)
	t.Cleanup(func() { sims.Faults.Release(ready) })
	done := make(chan error, len(vms))
	for _, vm := range vms {
		go func() { _, err := tn.publish(vol, vm, mmw); done <- err }()
	}
	for _, vm := range vms {
		eventually(t, "publish to "+vm+" waiting in MountedToPod", func(context.Context) (bool, error) {
			for _, st := range getVMI(t, tn.ns, vm).Status.VolumeStatus {
				if st.Name == vol && st.Phase == kubevirtv1.HotplugVolumeMounted {
					return true, nil
				}
			}
			return false, nil
		})
	}
	_, err := tn.publish(vol, vms[0], mmw)
	wantCode(t, "a second publish to the same VM", err, codes.Aborted, "already in progress")
	wantCode(t, "DeleteVolume while published", tn.delete(vol), codes.Aborted, "ControllerPublishVolume", "already in progress")
	sims.Faults.Release(ready)
	for range vms {
		if err := <-done; err != nil {
			t.Fatalf("concurrent multi-node publish: %v", err)
		}
	}
	got, err := tn.cc().ControllerGetVolume(callCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: vol})
	if err != nil || len(got.GetStatus().GetPublishedNodeIds()) != len(vms) {
		t.Fatalf("ControllerGetVolume after concurrent publishes = %v, %v", got, err)
	}
	if err := tn.unpublish(vol, ""); err != nil {
		t.Fatal(err)
	}
}

// TestIdempotency: every call may be repeated (the sidecars retry on timeouts) and answers the
// same; a call racing one still running for the same volume is ABORTED.
func TestIdempotency(t *testing.T) {
	tn := newTenant(t, "csi-idem", "idem", fixtureStorage())
	tn.vm("idem-w1")

	v1 := tn.create("pvc-idem", 16*mib)
	v2 := tn.create("pvc-idem", 16*mib)
	if v1.GetVolumeId() != v2.GetVolumeId() || v1.GetCapacityBytes() != v2.GetCapacityBytes() {
		t.Fatalf("repeated CreateVolume: %v then %v", v1, v2)
	}
	_, err := tn.cc().CreateVolume(callCtx(t), createReq("pvc-idem", 32*mib))
	wantCode(t, "same name, other size", err, codes.AlreadyExists, "outside the requested range")
	id := v1.GetVolumeId()

	pc1 := tn.mustPublish(id, "idem-w1", nil)
	pc2 := tn.mustPublish(id, "idem-w1", nil)
	if !maps.Equal(pc1, pc2) {
		t.Fatalf("repeated publish: %v then %v", pc1, pc2)
	}
	vm := getVM(t, tn.ns, "idem-w1")
	n := 0
	for _, v := range vm.Spec.Template.Spec.Volumes {
		if v.Name == id {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("volume %s is %d times in the VM spec", id, n)
	}

	// A second call while the first still waits for the hot-plug: ABORTED.
	second := tn.create("pvc-idem-2", 16*mib).GetVolumeId()
	ready := hotplug.FaultPoint(kubevirtv1.VolumeReady)
	sims.Faults.Stall(ready)
	t.Cleanup(func() { sims.Faults.Release(ready) })
	done := make(chan error, 1)
	go func() { _, err := tn.publish(second, "idem-w1", nil); done <- err }()
	eventually(t, "first publish waiting in MountedToPod", func(context.Context) (bool, error) {
		for _, st := range getVMI(t, tn.ns, "idem-w1").Status.VolumeStatus {
			if st.Name == second && st.Phase == kubevirtv1.HotplugVolumeMounted {
				return true, nil
			}
		}
		return false, nil
	})
	_, err = tn.publish(second, "idem-w1", nil)
	wantCode(t, "concurrent publish of the same volume", err, codes.Aborted, "ControllerPublishVolume on", "already in progress")
	sims.Faults.Release(ready)
	if err := <-done; err != nil {
		t.Fatalf("first publish: %v", err)
	}

	for range 2 {
		if err := tn.unpublish(id, "idem-w1"); err != nil {
			t.Fatalf("unpublish: %v", err)
		}
	}
	if err := tn.unpublish(second, ""); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := tn.delete(id); err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	// Unpublish of a deleted volume, or from a VM that is gone: nothing to do, OK.
	if err := tn.unpublish(id, "idem-w1"); err != nil {
		t.Fatalf("unpublish after delete: %v", err)
	}
	if err := tn.unpublish(second, "no-such-vm"); err != nil {
		t.Fatalf("unpublish from a missing VM: %v", err)
	}
}
