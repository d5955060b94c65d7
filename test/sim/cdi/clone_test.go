package cdi

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

func pvcSource(ns, name string) cdiv1.DataVolumeSource {
	return cdiv1.DataVolumeSource{PVC: &cdiv1.DataVolumeSourcePVC{Namespace: ns, Name: name}}
}

func snapshotSource(ns, name string) cdiv1.DataVolumeSource {
	return cdiv1.DataVolumeSource{Snapshot: &cdiv1.DataVolumeSourceSnapshot{Namespace: ns, Name: name}}
}

// A clone whose source does not exist waits with CloneWithoutSource; once the source exists
// and is populated the clone runs host-assisted (no VolumeSnapshotClass for the driver):
// CloneScheduled → CloneInProgress → Succeeded, sized from the source.
func TestCloneFromPVCHostAssisted(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-clone")
	storageClass(t, "linstor-clone")
	pw := watchPhases(t, ns, "copy")
	newDV(t, ns, "copy", dvSpec{class: ptr("linstor-clone"), source: pvcSource(ns, "golden")})
	eventually(t, "CloneWithoutSource on the clone", func(ctx context.Context) (bool, error) {
		dv := &cdiv1.DataVolume{}
		if err := kube().Get(ctx, key(ns, "copy"), dv); err != nil {
			return false, err
		}
		c := condition(dv, cdiv1.DataVolumeBound)
		return c.Reason == reasonCloneWithoutSource && c.Message == "The source pvc golden doesn't exist", nil
	})

	newDV(t, ns, "golden", dvSpec{class: ptr("linstor-clone"), size: "256Mi", mode: &block,
		access: []corev1.PersistentVolumeAccessMode{rwx}, source: blank()})
	assertPhases(t, pw.until(t, cdiv1.Succeeded), cdiv1.Pending, cdiv1.CloneScheduled, cdiv1.CloneInProgress, cdiv1.Succeeded)
	// The clone could only start copying once the source was bound.
	if src := getPVC(t, key(ns, "golden")); src.Status.Phase != corev1.ClaimBound {
		t.Errorf("source claim %s while its clone succeeded", src.Status.Phase)
	}
	dv := getDV(t, key(ns, "copy"))
	if dv.Annotations[annCloneType] != "copy" {
		t.Errorf("clone type %q, want copy (host-assisted)", dv.Annotations[annCloneType])
	}
	pvc := getPVC(t, key(ns, "copy"))
	if got := storage(pvc.Spec.Resources.Requests); got != 256<<20 {
		t.Errorf("clone request %d, want the source's 256Mi", got)
	}
	if ref := pvc.Spec.DataSourceRef; ref == nil || ref.Kind != "VolumeCloneSource" {
		t.Errorf("clone dataSourceRef %+v", ref)
	}
	msg := waitEvent(t, ns, "DataVolume", "copy", "CloneSucceeded")
	mustContain(t, "CloneSucceeded event", msg, "Successfully cloned from "+ns+"/golden into "+ns+"/copy")
}

// A target smaller than its source is refused as CDI refuses it.
func TestCloneSmallerThanSourceIsRefused(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-clone-small")
	storageClass(t, "linstor-small")
	newDV(t, ns, "big", dvSpec{class: ptr("linstor-small"), size: "128Mi", mode: &block, source: blank()})
	newDV(t, ns, "small", dvSpec{class: ptr("linstor-small"), size: "64Mi", mode: &block, source: pvcSource(ns, "big")})
	eventually(t, "CloneValidationFailed", func(ctx context.Context) (bool, error) {
		dv := &cdiv1.DataVolume{}
		if err := kube().Get(ctx, key(ns, "small"), dv); err != nil {
			return false, err
		}
		c := condition(dv, cdiv1.DataVolumeBound)
		return c.Reason == reasonCloneValidation, nil
	})
	mustContain(t, "condition", condition(getDV(t, key(ns, "small")), cdiv1.DataVolumeBound).Message,
		"target resources requests storage size is smaller than the source")
}

// With a VolumeSnapshotClass for the driver, CDI clones through a snapshot ("smart clone").
func TestCloneFromPVCSmart(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-smart")
	storageClass(t, "linstor-smart")
	snapshotClass(t, "linstor-snap-smart")
	newDV(t, ns, "golden", dvSpec{class: ptr("linstor-smart"), size: "128Mi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "golden"), cdiv1.Succeeded)
	pw := watchPhases(t, ns, "smart")
	newDV(t, ns, "smart", dvSpec{class: ptr("linstor-smart"), size: "128Mi", mode: &block, source: pvcSource("", "golden")})
	assertPhases(t, pw.until(t, cdiv1.Succeeded), cdiv1.Pending, cdiv1.CloneScheduled,
		cdiv1.SnapshotForSmartCloneInProgress, cdiv1.CloneFromSnapshotSourceInProgress, cdiv1.Succeeded)
	if ct := getDV(t, key(ns, "smart")).Annotations[annCloneType]; ct != "snapshot" {
		t.Errorf("clone type %q, want snapshot", ct)
	}
}

// Restoring a DataVolume from a VolumeSnapshot: the restore waits for the snapshot to be
// ready, then CloneScheduled → CloneFromSnapshotSourceInProgress → Succeeded, sized from the
// snapshot's restoreSize.
func TestRestoreFromSnapshot(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-restore")
	storageClass(t, "linstor-restore", expandable)
	snapshotClass(t, "linstor-snap-restore")
	newDV(t, ns, "vol", dvSpec{class: ptr("linstor-restore"), size: "100Mi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "vol"), cdiv1.Succeeded)
	newVolumeSnapshot(t, ns, "snap", "vol", "linstor-snap-restore")

	pw := watchPhases(t, ns, "restored")
	newDV(t, ns, "restored", dvSpec{class: ptr("linstor-restore"), mode: &block, source: snapshotSource(ns, "snap")})
	got := pw.until(t, cdiv1.Succeeded)
	// Until the snapshot has a status CDI refuses to start (CloneValidationFailed, phase
	// unset), so the recorded phases may begin later; the order is what matters.
	assertPhases(t, got[len(got)-3:], cdiv1.CloneScheduled, cdiv1.CloneFromSnapshotSourceInProgress, cdiv1.Succeeded)
	snap := waitSnapshotReady(t, key(ns, "snap"))
	restore, _ := snap.restoreSize()
	pvc := getPVC(t, key(ns, "restored"))
	if storage(pvc.Spec.Resources.Requests) != restore.Value() || storage(pvc.Status.Capacity) != restore.Value() {
		t.Errorf("restored claim request %d capacity %d, want the restore size %d",
			storage(pvc.Spec.Resources.Requests), storage(pvc.Status.Capacity), restore.Value())
	}
	if ct := getDV(t, key(ns, "restored")).Annotations[annCloneType]; ct != "snapshot" {
		t.Errorf("clone type %q, want snapshot", ct)
	}
}
