package controller

import (
	"fmt"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

// Access modes. A tenant volume is one infra disk hot-plugged into one or more VMs:
//   - single-node modes need the disk in one VM: infra ReadWriteOnce;
//   - multi-node modes need it in several VMs at once: infra ReadWriteMany, which LINSTOR
//     only offers for Block volumes (the case live migration needs);
//   - a filesystem written from several nodes would be corrupted (ext4/xfs are not cluster
//     filesystems), so MULTI_NODE_{SINGLE,MULTI}_WRITER with access type mount is refused.
//     Read-only sharing of a filesystem (MULTI_NODE_READER_ONLY) is safe and allowed.

// Filesystems the node plugin formats; others would fail at NodeStage, so refuse them early.
var supportedFSTypes = []string{"", "ext4", "xfs"}

func multiNode(m csi.VolumeCapability_AccessMode_Mode) bool {
	switch m {
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return true
	}
	return false
}

func multiNodeWriter(m csi.VolumeCapability_AccessMode_Mode) bool {
	return m == csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER ||
		m == csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
}

// validateCapability checks one capability on its own; errors are InvalidArgument reasons.
func validateCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("volume capability is empty")
	}
	mode := c.GetAccessMode().GetMode()
	if _, known := csi.VolumeCapability_AccessMode_Mode_name[int32(mode)]; !known || mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return fmt.Errorf("access mode %v is not supported", mode)
	}
	switch {
	case c.GetBlock() != nil:
		return nil
	case c.GetMount() != nil:
		if multiNodeWriter(mode) {
			return fmt.Errorf("access mode %s with access type mount is not supported: several nodes writing one ext4/xfs filesystem corrupt it; use access type block", mode)
		}
		if fs := c.GetMount().GetFsType(); !slices.Contains(supportedFSTypes, fs) {
			return fmt.Errorf("fs_type %q is not supported (want ext4 or xfs)", fs)
		}
		return nil
	default:
		return fmt.Errorf("access type must be block or mount")
	}
}

// validateCapabilities checks a non-empty list of capabilities.
func validateCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return fmt.Errorf("volume_capabilities are required")
	}
	for i, c := range caps {
		if err := validateCapability(c); err != nil {
			return fmt.Errorf("volume_capabilities[%d]: %w", i, err)
		}
	}
	return nil
}

// infraLayout is how a volume is laid out on the infra side.
type infraLayout struct {
	accessMode corev1.PersistentVolumeAccessMode
	volumeMode corev1.PersistentVolumeMode
}

// layoutFor decides the DataVolume's access and volume mode for validated capabilities: RWX
// Block as soon as one capability needs several nodes, else RWO in the configured mode.
func layoutFor(caps []*csi.VolumeCapability, storage config.Storage) infraLayout {
	mode := corev1.PersistentVolumeBlock
	if storage.VolumeMode == config.VolumeModeFilesystem {
		mode = corev1.PersistentVolumeFilesystem
	}
	for _, c := range caps {
		if multiNode(c.GetAccessMode().GetMode()) {
			return infraLayout{accessMode: corev1.ReadWriteMany, volumeMode: corev1.PersistentVolumeBlock}
		}
	}
	return infraLayout{accessMode: corev1.ReadWriteOnce, volumeMode: mode}
}

// capabilitySupported reports whether a volume with infra access modes can serve c; the reason
// says why not. c must have passed validateCapability.
func capabilitySupported(c *csi.VolumeCapability, modes []corev1.PersistentVolumeAccessMode) (bool, string) {
	if multiNode(c.GetAccessMode().GetMode()) && !slices.Contains(modes, corev1.ReadWriteMany) {
		return false, fmt.Sprintf("access mode %s needs a multi-node volume, but this volume was created single-node (infra %v)",
			c.GetAccessMode().GetMode(), modes)
	}
	return true, ""
}

// singleAttach reports whether a volume with these infra access modes may be in one VM only.
func singleAttach(modes []corev1.PersistentVolumeAccessMode) bool {
	return !slices.Contains(modes, corev1.ReadWriteMany)
}

// nodeExpansionRequired: a filesystem must be grown by the node after the disk grew; a raw
// block volume needs nothing. Without a capability, assume a filesystem (the safe answer).
func nodeExpansionRequired(c *csi.VolumeCapability) bool {
	return c == nil || c.GetBlock() == nil
}
