package disks

import (
	"fmt"
	"strings"
)

// Buses a hot-plugged disk may use; KubeVirt refuses any other bus for hotplug.
const (
	BusVirtio = "virtio"
	BusSCSI   = "scsi"
)

// VirtioSerialMax is how many bytes of a serial a virtio-blk guest sees: QEMU copies the serial
// into the 20-byte VIRTIO_BLK_ID_BYTES identify buffer and drops the rest.
const VirtioSerialMax = 20

// GuestSerial is the serial a guest reads for a disk with the given configured serial and bus.
func GuestSerial(serial, bus string) string {
	if bus == BusVirtio && len(serial) > VirtioSerialMax {
		return serial[:VirtioSerialMax]
	}
	return serial
}

// LinkName is the /dev/disk/by-id name a Linux guest's udev gives the disk, or "" when the disk
// has no serial (udev then creates no by-id link for virtio). It fails for buses KubeVirt cannot
// hot-plug and for serials that could not name a file.
func LinkName(serial, bus string) (string, error) {
	if strings.ContainsAny(serial, "/\x00") {
		return "", fmt.Errorf("serial %q cannot name a device link", serial)
	}
	if serial == "" {
		return "", nil
	}
	switch bus {
	case BusVirtio:
		return "virtio-" + GuestSerial(serial, bus), nil
	case BusSCSI:
		// QEMU's scsi-hd reports vendor "QEMU", product "QEMU HARDDISK"; udev's scsi_id joins
		// them with the serial and replaces blanks with underscores.
		return "scsi-0QEMU_QEMU_HARDDISK_" + serial, nil
	default:
		return "", fmt.Errorf("bus %q cannot be hot-plugged (want %s or %s)", bus, BusVirtio, BusSCSI)
	}
}
