package cdi

import (
	"math"

	corev1 "k8s.io/api/core/v1"
)

// LINSTOR CSI's allocation rule (piraeusdatastore/linstor-csi, Linstor.AllocationSizeKiB):
// a volume is sized in whole KiB, at least 4 KiB, and CreateVolume/ControllerExpandVolume
// report exactly that size, which the external-provisioner/resizer copy into the PV. Backend
// extent rounding (LVM 4 MiB extents, ZFS volblocksize) happens below DRBD and is not reported
// to Kubernetes, so it does not show in PV capacity.
const (
	linstorGranularity    = 1024
	linstorMinVolumeBytes = 4096
)

// linstorCapacity is the capacity LINSTOR CSI reports for a request of n bytes.
func linstorCapacity(n int64) int64 {
	if n < linstorMinVolumeBytes {
		n = linstorMinVolumeBytes
	}
	return (n + linstorGranularity - 1) / linstorGranularity * linstorGranularity
}

// CDI's size rendering for DataVolume spec.storage (controller/common InflateSizeWithOverhead
// and util.GetRequiredSpace): Filesystem volumes get the request aligned up to 1 MiB and then
// inflated by the filesystem overhead, so the disk image still fits after mkfs; Block volumes
// are requested as is. spec.pvc is never inflated.
const (
	cdiAlignBytes = 1 << 20
	// defaultFilesystemOverhead is CDIConfig's status.filesystemOverhead.global in a default
	// install (common.DefaultGlobalOverhead "0.06"). The sim has no CDIConfig to override it.
	defaultFilesystemOverhead = 0.06
	// cdiMinBytes: CDI refuses spec.storage requests below 1 MiB (KubeVirt's minimum disk).
	cdiMinBytes = 1 << 20
)

// cdiInflatedSize is the PVC request CDI renders from a spec.storage request of n bytes.
func cdiInflatedSize(n int64, mode corev1.PersistentVolumeMode) int64 {
	if mode == corev1.PersistentVolumeBlock {
		return n
	}
	aligned := (n + cdiAlignBytes - 1) / cdiAlignBytes * cdiAlignBytes
	return int64(math.Ceil(float64(aligned) * (1 + defaultFilesystemOverhead)))
}

// volumeModeOf resolves a nil volume mode to Filesystem, as the apiserver defaults it.
func volumeModeOf(m *corev1.PersistentVolumeMode) corev1.PersistentVolumeMode {
	if m != nil && *m == corev1.PersistentVolumeBlock {
		return corev1.PersistentVolumeBlock
	}
	return corev1.PersistentVolumeFilesystem
}
