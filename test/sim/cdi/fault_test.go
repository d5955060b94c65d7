package cdi

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

// Stalling "datavolume/Succeeded" holds a populator import in ImportInProgress — with the
// target claim still Pending, as on a real cluster until population ends — until released.
func TestFaultStallDataVolumePhase(t *testing.T) {
	f := fault.New()
	startSim(t, Options{PhaseDelay: testPhaseDelay, Faults: f})
	ns := namespace(t, "fault-stall")
	storageClass(t, "linstor-stall")
	f.Stall(FaultDataVolume("Succeeded"))
	newDV(t, ns, "held", dvSpec{class: ptr("linstor-stall"), size: "64Mi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "held"), cdiv1.ImportInProgress)
	stays(t, "held in ImportInProgress with the claim Pending", 4*testPhaseDelay, func(ctx context.Context) (bool, error) {
		dv, pvc := &cdiv1.DataVolume{}, &corev1.PersistentVolumeClaim{}
		if err := kube().Get(ctx, key(ns, "held"), dv); err != nil {
			return false, err
		}
		if err := kube().Get(ctx, key(ns, "held"), pvc); err != nil {
			return false, err
		}
		return dv.Status.Phase == cdiv1.ImportInProgress && pvc.Status.Phase == corev1.ClaimPending, nil
	})
	if c := condition(getDV(t, key(ns, "held")), cdiv1.DataVolumeRunning); c.Status != corev1.ConditionTrue {
		t.Errorf("Running condition while importing: %+v", c)
	}
	f.Release(FaultDataVolume("Succeeded"))
	waitDVPhase(t, key(ns, "held"), cdiv1.Succeeded)
	if getPVC(t, key(ns, "held")).Status.Phase != corev1.ClaimBound {
		t.Error("claim not bound after the DataVolume succeeded")
	}
}

// FailNext makes the importer pod fail: the phase stays, restartCount counts the failures,
// Running shows the error, a warning is emitted, and the import then completes.
func TestFaultFailNextDataVolumePhase(t *testing.T) {
	f := fault.New()
	startSim(t, Options{PhaseDelay: testPhaseDelay, Faults: f})
	ns := namespace(t, "fault-fail")
	storageClass(t, "linstor-fail")
	f.FailNext(FaultDataVolume("ImportInProgress"), 2)
	newDV(t, ns, "flaky", dvSpec{class: ptr("linstor-fail"), size: "64Mi", mode: &block, source: blank()})
	eventually(t, "a failed transfer", func(ctx context.Context) (bool, error) {
		dv := &cdiv1.DataVolume{}
		if err := kube().Get(ctx, key(ns, "flaky"), dv); err != nil {
			return false, err
		}
		c := condition(dv, cdiv1.DataVolumeRunning)
		return dv.Status.Phase == cdiv1.ImportScheduled && c.Reason == "Error" && c.Message == "injected failure at datavolume/ImportInProgress", nil
	})
	mustContain(t, "ImportFailed event", waitEvent(t, ns, "DataVolume", "flaky", "ImportFailed"), "Failed to import into PVC flaky")
	dv := waitDVPhase(t, key(ns, "flaky"), cdiv1.Succeeded)
	if dv.Status.RestartCount != 2 {
		t.Errorf("restartCount %d, want 2", dv.Status.RestartCount)
	}
	if hits := f.Hits(FaultDataVolume("ImportInProgress")); hits != 3 {
		t.Errorf("fault point passed %d times, want 3 (two failures, one success)", hits)
	}
}

// pvc/bind: a failed CreateVolume is a ProvisioningFailed event and a retry; a stall keeps the
// claim Pending.
func TestFaultClaimBind(t *testing.T) {
	f := fault.New()
	startSim(t, Options{PhaseDelay: testPhaseDelay, Faults: f})
	ns := namespace(t, "fault-bind")
	storageClass(t, "linstor-bind")
	f.FailNext(FaultPVCBind, 1)
	plainClaim(t, ns, "retry", "linstor-bind", "16Mi", block)
	mustContain(t, "ProvisioningFailed event", waitEvent(t, ns, "PersistentVolumeClaim", "retry", "ProvisioningFailed"),
		"injected failure at pvc/bind")
	waitPVC(t, key(ns, "retry"), "bound after the retry", func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })

	f.Stall(FaultPVCBind)
	plainClaim(t, ns, "held", "linstor-bind", "16Mi", block)
	stays(t, "Pending while pvc/bind is stalled", 4*testPhaseDelay, func(ctx context.Context) (bool, error) {
		p := &corev1.PersistentVolumeClaim{}
		return kube().Get(ctx, key(ns, "held"), p) == nil && p.Status.Phase == corev1.ClaimPending, nil
	})
	f.Release(FaultPVCBind)
	waitPVC(t, key(ns, "held"), "bound after release", func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })
}

// pvc/resize: a failed ControllerExpandVolume sets ControllerResizeError and is retried.
func TestFaultResize(t *testing.T) {
	f := fault.New()
	startSim(t, Options{PhaseDelay: testPhaseDelay, ResizeDelay: testResizeDelay, Faults: f})
	ns := namespace(t, "fault-resize")
	storageClass(t, "linstor-fresize", expandable)
	plainClaim(t, ns, "vol", "linstor-fresize", "16Mi", block)
	waitPVC(t, key(ns, "vol"), "bound", func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })
	f.FailNext(FaultPVCResize, 1)
	if err := growClaim(testCtx(t), ns, "vol", "32Mi"); err != nil {
		t.Fatal(err)
	}
	waitPVC(t, key(ns, "vol"), "ControllerResizeError", func(p *corev1.PersistentVolumeClaim) bool {
		return hasClaimCondition(p, corev1.PersistentVolumeClaimControllerResizeError)
	})
	mustContain(t, "VolumeResizeFailed event", waitEvent(t, ns, "PersistentVolumeClaim", "vol", "VolumeResizeFailed"),
		"injected failure at pvc/resize")
	waitPVC(t, key(ns, "vol"), "resized after the retry", func(p *corev1.PersistentVolumeClaim) bool {
		return storage(p.Status.Capacity) == 32<<20 && !hasClaimCondition(p, corev1.PersistentVolumeClaimControllerResizeError)
	})
}

// snapshot/ready: a stall keeps the snapshot bound but not ready; a failure is reported in
// status.error and retried.
func TestFaultSnapshotReady(t *testing.T) {
	f := fault.New()
	startSim(t, Options{PhaseDelay: testPhaseDelay, Faults: f})
	ns := namespace(t, "fault-snap")
	storageClass(t, "linstor-fsnap")
	snapshotClass(t, "linstor-vsc-fault")
	plainClaim(t, ns, "vol", "linstor-fsnap", "16Mi", block)
	waitPVC(t, key(ns, "vol"), "bound", func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })

	f.Stall(FaultSnapshotReady)
	f.FailNext(FaultSnapshotReady, 1)
	newVolumeSnapshot(t, ns, "s", "vol", "linstor-vsc-fault")
	stays(t, "bound but not ready while stalled", 4*testPhaseDelay, func(ctx context.Context) (bool, error) {
		u := newSnapshot()
		if err := kube().Get(ctx, key(ns, "s"), u); err != nil {
			return false, err
		}
		vs := volumeSnapshot{u}
		return !vs.readyToUse(), nil
	})
	if vs := (volumeSnapshot{getSnapshot(t, key(ns, "s"))}); vs.contentName() == "" {
		t.Error("stalled snapshot has no bound content")
	}
	f.Release(FaultSnapshotReady)
	eventually(t, "injected snapshot error", func(ctx context.Context) (bool, error) {
		u := newSnapshot()
		if err := kube().Get(ctx, key(ns, "s"), u); err != nil {
			return false, err
		}
		return volumeSnapshot{u}.errorMessage() != "", nil
	})
	mustContain(t, "status.error", volumeSnapshot{getSnapshot(t, key(ns, "s"))}.errorMessage(), "injected failure at snapshot/ready")
	waitSnapshotReady(t, key(ns, "s"))
}

// SetLatency slows a DataVolume step by the given time on top of PhaseDelay.
func TestFaultLatency(t *testing.T) {
	f := fault.New()
	startSim(t, Options{PhaseDelay: testPhaseDelay, Faults: f})
	ns := namespace(t, "fault-latency")
	storageClass(t, "linstor-slow")
	const extra = 600 * time.Millisecond
	f.SetLatency(FaultDataVolume("ImportScheduled"), extra)
	start := time.Now()
	newDV(t, ns, "slow", dvSpec{class: ptr("linstor-slow"), size: "16Mi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "slow"), cdiv1.ImportScheduled)
	if took := time.Since(start); took < extra+testPhaseDelay {
		t.Errorf("ImportScheduled after %s, want at least PhaseDelay+latency %s", took, extra+testPhaseDelay)
	}
}
