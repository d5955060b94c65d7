// Package csi holds what the CSI controller (management side) and the CSI node plugin (tenant
// side) must agree on without sharing any code path to the infra API: the driver name, the
// publish_context keys, and how a volume ID becomes the disk serial the guest sees.
package csi

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// DriverName is the CSI driver name registered in the tenant (CSIDriver object, StorageClass
// provisioner).
const DriverName = "csi.tenantcloud.io"

// publish_context keys set by ControllerPublishVolume and read by NodeStageVolume.
const (
	// PublishContextSerial is the disk serial the hot-plugged disk carries.
	PublishContextSerial = "serial"
	// PublishContextBus is the disk bus ("scsi" or "virtio"); it decides how the guest names
	// the device.
	PublishContextBus = "bus"
)

// Disk buses the controller may hot-plug with.
const (
	BusSCSI   = "scsi"
	BusVirtio = "virtio"
)

// TopologyZoneKey is the topology segment both sides report and match: the well-known zone
// label of the tenant Node (csi-node) and of the infra Node running the VM (csi-controller).
const TopologyZoneKey = "topology.kubernetes.io/zone"

// MaxSerialLen is the longest serial that survives intact: QEMU truncates virtio-blk serials
// to 20 bytes, so a longer one could never be matched by the node plugin.
const MaxSerialLen = 20

var serialEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Serial derives the disk serial of a volume: 20 lowercase base32 characters of the SHA-256 of
// the volume ID (100 bits, so collisions between a tenant's volumes are not a concern), the
// same on every call and on both sides of the tenant boundary.
func Serial(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return strings.ToLower(serialEncoding.EncodeToString(sum[:]))[:MaxSerialLen]
}

// Volumes adopted from the upstream KubeVirt CSI driver (kubevirt/csi-driver; see
// docs/migration.md). Their PVs name that driver and carry its handle and volume context, all
// immutable, so tenantcloud serves them under those names:
//   - the driver name is csi.kubevirt.io (pkg/service/driver.go VendorName);
//   - the handle is the DataVolume's name, the CSI name external-provisioner chose:
//     "pvc-" + the tenant PVC's UID (pkg/service/controller.go CreateVolume: VolumeId = req.Name);
//   - the volume context holds "serial" = the DataVolume's UID, which upstream hot-plugs as the
//     disk serial and its node plugin matches against lsblk's SERIAL, and "bus" (default scsi).
const (
	// LegacyDriverName is the upstream driver's name, under which adopted volumes are served.
	LegacyDriverName = "csi.kubevirt.io"
	// LegacyVolumeIDPrefix starts every handle external-provisioner gave the upstream driver.
	LegacyVolumeIDPrefix = "pvc-"
	// LegacyContextSerial and LegacyContextBus are the upstream volume_context keys.
	LegacyContextSerial = "serial"
	LegacyContextBus    = "bus"
)

// IsLegacyVolumeID reports whether id has the form of an upstream volume handle: "pvc-" and a
// canonical lowercase UUID. Nothing else can be an adopted volume, so no lookup is made for it.
func IsLegacyVolumeID(id string) bool {
	rest, ok := strings.CutPrefix(id, LegacyVolumeIDPrefix)
	return ok && IsCanonicalUID(rest)
}

// IsCanonicalUID reports whether s is a UUID as apiservers assign them: 8-4-4-4-12 lowercase
// hex digits. Upstream serials (DataVolume UIDs) have this form.
func IsCanonicalUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
				return false
			}
		}
	}
	return true
}
