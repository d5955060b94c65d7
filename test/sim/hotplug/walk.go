package hotplug

import (
	"fmt"

	kubevirtv1 "kubevirt.io/api/core/v1"
)

// Phases a hot-plugged volume's status entry walks, as virt-controller and virt-handler write
// them (kubevirt v1.8 pkg/virt-controller/watch/vmi/storage.go, pkg/virt-handler/vm.go).
//
//	plug:   (none) → Pending → Bound → AttachedToNode → MountedToPod → Ready
//	unplug: Ready|MountedToPod → UnMountedFromPod → Detaching → (entry removed)
//	        AttachedToNode → Detaching → (removed);  Pending|Bound → (removed)
const (
	phaseNone = kubevirtv1.VolumePhase("")
	// phaseGone is the pseudo-phase "entry removed" at the end of the unplug walk.
	phaseGone = kubevirtv1.VolumePhase("Unplugged")
)

// Reasons, upstream's (pkg/controller, pkg/virt-handler), plus one for failures.
const (
	reasonPVCNotFound   = "FailedPvcNotFound"
	reasonPVCNotReady   = "PVCNotReady"
	reasonCreatedPod    = "SuccessfulCreate"
	reasonDeletedPod    = "SuccessfulDelete"
	reasonMounted       = "VolumeMountedToPod"
	reasonUnmounted     = "VolumeUnMountedFromPod"
	reasonReady         = "VolumeReady"
	reasonUnplugged     = "VolumeUnplugged"
	reasonFailedHotplug = "FailedHotplugSync"
)

// nextPhase is where a volume goes from current: forward while it is in the VMI spec,
// backward (towards removal) once it left. ok is false when there is nowhere to go.
func nextPhase(current kubevirtv1.VolumePhase, inSpec bool) (next kubevirtv1.VolumePhase, ok bool) {
	if inSpec {
		switch current {
		case phaseNone:
			return kubevirtv1.VolumePending, true
		case kubevirtv1.VolumePending:
			return kubevirtv1.VolumeBound, true
		case kubevirtv1.VolumeBound:
			return kubevirtv1.HotplugVolumeAttachedToNode, true
		case kubevirtv1.HotplugVolumeAttachedToNode:
			return kubevirtv1.HotplugVolumeMounted, true
		case kubevirtv1.HotplugVolumeMounted:
			return kubevirtv1.VolumeReady, true
		case kubevirtv1.HotplugVolumeUnMounted, kubevirtv1.HotplugVolumeDetaching:
			// Removed and added back before the unplug finished: start over.
			return kubevirtv1.VolumePending, true
		}
		return current, false
	}
	switch current {
	case kubevirtv1.VolumeReady, kubevirtv1.HotplugVolumeMounted:
		return kubevirtv1.HotplugVolumeUnMounted, true
	case kubevirtv1.HotplugVolumeUnMounted, kubevirtv1.HotplugVolumeAttachedToNode:
		return kubevirtv1.HotplugVolumeDetaching, true
	case kubevirtv1.HotplugVolumeDetaching, kubevirtv1.VolumePending, kubevirtv1.VolumeBound, phaseNone:
		return phaseGone, true
	}
	return current, false
}

// transitionText is the reason and message an entry carries after moving to phase.
func transitionText(phase kubevirtv1.VolumePhase, volume, attachPod string) (reason, message string) {
	switch phase {
	case kubevirtv1.VolumeBound:
		return reasonPVCNotReady, "PVC is in phase Bound" // sic: upstream's wording
	case kubevirtv1.HotplugVolumeAttachedToNode:
		return reasonCreatedPod, fmt.Sprintf("Created hotplug attachment pod %s, for volume %s", attachPod, volume)
	case kubevirtv1.HotplugVolumeMounted:
		return reasonMounted, fmt.Sprintf("Volume %s has been mounted in virt-launcher pod", volume)
	case kubevirtv1.VolumeReady:
		return reasonReady, fmt.Sprintf("Successfully attach hotplugged volume %s to VM", volume)
	case kubevirtv1.HotplugVolumeUnMounted:
		return reasonUnmounted, fmt.Sprintf("Volume %s has been unmounted from virt-launcher pod", volume)
	case kubevirtv1.HotplugVolumeDetaching:
		return reasonDeletedPod, fmt.Sprintf("Deleted hotplug attachment pod %s, for volume %s", attachPod, volume)
	case phaseGone:
		return reasonUnplugged, fmt.Sprintf("Volume %s has been unplugged", volume)
	}
	return "", ""
}

// targetName picks the guest device name for a disk on bus, the next free letter after the
// names in use: vdX for virtio, sdX for scsi, as libvirt names them.
func targetName(bus kubevirtv1.DiskBus, used map[string]bool) string {
	prefix := "vd"
	if bus == kubevirtv1.DiskBusSCSI {
		prefix = "sd"
	}
	for c := 'a'; c <= 'z'; c++ {
		if name := prefix + string(c); !used[name] {
			return name
		}
	}
	return ""
}
