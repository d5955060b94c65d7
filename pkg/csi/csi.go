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
