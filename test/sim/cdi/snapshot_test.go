package cdi

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A VolumeSnapshot of a bound LINSTOR claim becomes readyToUse with the claim's capacity as
// restoreSize, bound to a VolumeSnapshotContent; deleting it deletes the content (policy
// Delete).
func TestSnapshotBecomesReady(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "snap-ready")
	storageClass(t, "linstor-snap")
	snapshotClass(t, "linstor-vsc")
	newDV(t, ns, "vol", dvSpec{class: ptr("linstor-snap"), size: "1000000000", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "vol"), cdiv1.Succeeded)
	pvc := getPVC(t, key(ns, "vol"))

	start := time.Now()
	newVolumeSnapshot(t, ns, "s1", "vol", "linstor-vsc")
	snap := waitSnapshotReady(t, key(ns, "s1"))
	if took := time.Since(start); took < testPhaseDelay {
		t.Errorf("snapshot ready after %s, before PhaseDelay", took)
	}
	size, ok := snap.restoreSize()
	if !ok || size.Value() != storage(pvc.Status.Capacity) {
		t.Errorf("restoreSize %v, want the claim's capacity %d", snap.str("status", "restoreSize"), storage(pvc.Status.Capacity))
	}
	if snap.str("status", "creationTime") == "" || snap.errorMessage() != "" {
		t.Errorf("status %v", snap.Object["status"])
	}
	content := newUnstructured(snapshotContentGVK)
	if err := kube().Get(testCtx(t), client.ObjectKey{Name: snap.contentName()}, content); err != nil {
		t.Fatalf("bound content %q: %v", snap.contentName(), err)
	}
	cs := volumeSnapshot{content}
	if cs.str("spec", "driver") != Driver || cs.str("spec", "source", "volumeHandle") != pvc.Spec.VolumeName ||
		cs.str("spec", "volumeSnapshotRef", "uid") != string(snap.GetUID()) || !cs.readyToUse() {
		t.Errorf("content %v", content.Object)
	}
	if got, _, _ := unstructured.NestedInt64(content.Object, "status", "restoreSize"); got != size.Value() {
		t.Errorf("content restoreSize %d, want %d", got, size.Value())
	}
	waitEvent(t, ns, "VolumeSnapshot", "s1", "SnapshotReady")

	if err := kube().Delete(testCtx(t), snap.Unstructured); err != nil {
		t.Fatal(err)
	}
	eventually(t, "snapshot and content gone", func(ctx context.Context) (bool, error) {
		errS := kube().Get(ctx, key(ns, "s1"), newSnapshot())
		errC := kube().Get(ctx, client.ObjectKey{Name: content.GetName()}, newUnstructured(snapshotContentGVK))
		return apierrors.IsNotFound(errS) && apierrors.IsNotFound(errC), nil
	})
}

// A snapshot of a claim that does not exist reports the snapshot-controller's error and is
// not ready; it recovers once the claim exists and is bound. Without a class name the
// driver's default class is filled in.
func TestSnapshotOfMissingClaimErrors(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "snap-missing")
	storageClass(t, "linstor-ghost")
	snapshotClass(t, "linstor-vsc-ghost")
	newVolumeSnapshot(t, ns, "orphan", "ghost", "linstor-vsc-ghost")
	var msg string
	eventually(t, "snapshot error", func(ctx context.Context) (bool, error) {
		u := newSnapshot()
		if err := kube().Get(ctx, key(ns, "orphan"), u); err != nil {
			return false, err
		}
		msg = volumeSnapshot{u}.errorMessage()
		return msg != "", nil
	})
	mustContain(t, "status.error.message", msg, "Failed to create snapshot content with error")
	mustContain(t, "status.error.message", msg, "cannot get claim from snapshot")
	if vs := (volumeSnapshot{getSnapshot(t, key(ns, "orphan"))}); vs.readyToUse() || vs.contentName() != "" {
		t.Fatalf("snapshot of a missing claim: ready=%v content=%q", vs.readyToUse(), vs.contentName())
	}
	waitEvent(t, ns, "VolumeSnapshot", "orphan", "SnapshotContentCreationFailed")

	plainClaim(t, ns, "ghost", "linstor-ghost", "32Mi", corev1.PersistentVolumeBlock)
	snap := waitSnapshotReady(t, key(ns, "orphan"))
	if snap.errorMessage() != "" {
		t.Errorf("ready snapshot still reports %q", snap.errorMessage())
	}
}

// No class named: the default VolumeSnapshotClass of the PV's driver is set, as the
// snapshot-controller does; with none, the snapshot reports it.
func TestSnapshotDefaultClass(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "snap-default")
	storageClass(t, "linstor-sdef")
	plainClaim(t, ns, "vol", "linstor-sdef", "32Mi", corev1.PersistentVolumeBlock)
	waitPVC(t, key(ns, "vol"), "bound", func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })
	newVolumeSnapshot(t, ns, "nodefault", "vol", "")
	eventually(t, "missing default class reported", func(ctx context.Context) (bool, error) {
		u := newSnapshot()
		if err := kube().Get(ctx, key(ns, "nodefault"), u); err != nil {
			return false, err
		}
		return volumeSnapshot{u}.errorMessage() == "Failed to set default snapshot class with error cannot find default snapshot class", nil
	})

	c := newUnstructured(snapshotClassGVK)
	c.SetName("linstor-vsc-default")
	c.SetAnnotations(map[string]string{annDefaultSnapshotClass: "true"})
	c.Object["driver"], c.Object["deletionPolicy"] = Driver, "Delete"
	if err := kube().Create(testCtx(t), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube().Delete(context.Background(), c) })
	newVolumeSnapshot(t, ns, "defaulted", "vol", "")
	snap := waitSnapshotReady(t, key(ns, "defaulted"))
	if snap.className() != "linstor-vsc-default" {
		t.Errorf("volumeSnapshotClassName %q, want the default", snap.className())
	}
}
