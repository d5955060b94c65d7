package cdi

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// operation is what a DataVolume asks CDI to do (CDI's dataVolumeOp).
type operation int

const (
	opUnsupported operation = iota
	opImport                // blank, or an http/s3/gcs/registry/imageio/vddk source (content not simulated)
	opClonePVC
	opCloneSnapshot
)

func operationOf(dv *cdiv1.DataVolume) operation {
	src := dv.Spec.Source
	switch {
	case dv.Spec.SourceRef != nil || src == nil:
		return opUnsupported // DataSource references and external population are not simulated
	case src.PVC != nil:
		return opClonePVC
	case src.Snapshot != nil:
		return opCloneSnapshot
	case src.Upload != nil:
		return opUnsupported
	case src.Blank != nil || src.HTTP != nil || src.S3 != nil || src.GCS != nil || src.Registry != nil ||
		src.Imageio != nil || src.VDDK != nil:
		return opImport
	}
	return opUnsupported
}

// cloneStrategy is CDI's CDICloneStrategy as the clone populator's planner picks it.
type cloneStrategy string

const (
	strategyNone         cloneStrategy = ""
	strategyHostAssisted cloneStrategy = cloneStrategy(cdiv1.CloneStrategyHostAssisted) // "copy"
	strategySnapshot     cloneStrategy = cloneStrategy(cdiv1.CloneStrategySnapshot)     // "snapshot"
)

// cloneFromPVCStrategy mirrors CDI's computeStrategyForSourcePVC with no StorageProfile or
// CDIConfig override: "snapshot" when a VolumeSnapshotClass of the target's driver exists and
// source and target share driver and volume mode and the size fits (or the class expands);
// otherwise host-assisted copy.
func cloneFromPVCStrategy(source *corev1.PersistentVolumeClaim, sourceClass, targetClass *storagev1.StorageClass,
	target *corev1.PersistentVolumeClaimSpec, snapshotClassDrivers []string) cloneStrategy {
	if targetClass == nil || sourceClass == nil || !slices.Contains(snapshotClassDrivers, targetClass.Provisioner) {
		return strategyHostAssisted
	}
	if sourceClass.Provisioner != targetClass.Provisioner || volumeModeOf(source.Spec.VolumeMode) != volumeModeOf(target.VolumeMode) {
		return strategyHostAssisted
	}
	srcCap, okSrc := source.Status.Capacity[corev1.ResourceStorage]
	req, okReq := target.Resources.Requests[corev1.ResourceStorage]
	if okSrc && okReq && srcCap.Cmp(req) < 0 && !allowsExpansion(targetClass) {
		return strategyHostAssisted
	}
	return strategySnapshot
}

// cloneFromSnapshotStrategy mirrors computeStrategyForSourceSnapshot: a smart restore needs
// the snapshot's driver to be the target class's provisioner, the same volume mode, and either
// a request no larger than the restore size or an expandable class.
func cloneFromSnapshotStrategy(snapDriver string, snapMode corev1.PersistentVolumeMode, restoreSize int64,
	targetClass *storagev1.StorageClass, target *corev1.PersistentVolumeClaimSpec) cloneStrategy {
	if targetClass == nil || targetClass.Provisioner != snapDriver {
		return strategyHostAssisted
	}
	if req, ok := target.Resources.Requests[corev1.ResourceStorage]; ok && restoreSize < req.Value() && !allowsExpansion(targetClass) {
		return strategyHostAssisted
	}
	if snapMode != "" && snapMode != volumeModeOf(target.VolumeMode) {
		return strategyHostAssisted
	}
	return strategySnapshot
}

// steps lists the phases a DataVolume walks after its claim exists, ending in Succeeded.
// With populators (CSI classes) the target claim stays Pending until the last step binds it;
// without (legacy flow) the claim binds first and CDI reports PVCBound before any work.
func steps(op operation, populator bool, strategy cloneStrategy) []cdiv1.DataVolumePhase {
	var work []cdiv1.DataVolumePhase
	switch op {
	case opImport:
		work = []cdiv1.DataVolumePhase{cdiv1.ImportScheduled, cdiv1.ImportInProgress}
	case opClonePVC:
		if populator && strategy == strategySnapshot {
			work = []cdiv1.DataVolumePhase{cdiv1.CloneScheduled, cdiv1.SnapshotForSmartCloneInProgress, cdiv1.CloneFromSnapshotSourceInProgress}
		} else {
			work = []cdiv1.DataVolumePhase{cdiv1.CloneScheduled, cdiv1.CloneInProgress}
		}
	case opCloneSnapshot:
		switch {
		case !populator:
			// Legacy: CDI restores a temporary claim from the snapshot, then host-copies it.
			work = []cdiv1.DataVolumePhase{cdiv1.CloneScheduled, cdiv1.CloneInProgress}
		case strategy == strategySnapshot:
			work = []cdiv1.DataVolumePhase{cdiv1.CloneScheduled, cdiv1.CloneFromSnapshotSourceInProgress}
		default:
			work = []cdiv1.DataVolumePhase{cdiv1.CloneScheduled, cdiv1.CloneFromSnapshotSourceInProgress, cdiv1.CloneInProgress}
		}
	default:
		return nil
	}
	if !populator {
		work = append([]cdiv1.DataVolumePhase{cdiv1.PVCBound}, work...)
	}
	return append(work, cdiv1.Succeeded)
}

// nextStep is the step after current in s (the first if current is not a step).
func nextStep(s []cdiv1.DataVolumePhase, current cdiv1.DataVolumePhase) (cdiv1.DataVolumePhase, bool) {
	for i, p := range s {
		if p == current {
			if i+1 < len(s) {
				return s[i+1], true
			}
			return "", false
		}
	}
	if len(s) == 0 {
		return "", false
	}
	return s[0], true
}

func allowsExpansion(sc *storagev1.StorageClass) bool {
	return sc != nil && sc.AllowVolumeExpansion != nil && *sc.AllowVolumeExpansion
}
