package node

import (
	"fmt"
	"strings"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// Names a Linux guest's udev gives a QEMU disk in /dev/disk/by-id:
//   - virtio-blk: "virtio-" + the serial as the guest reads it, which QEMU cuts to 20 bytes
//     (VIRTIO_BLK_ID_BYTES);
//   - scsi-hd: "scsi-" + an ID type + vendor_product_serial with blanks turned into "_", e.g.
//     "scsi-0QEMU_QEMU_HARDDISK_<serial>" (udev may also add an "scsi-S…" variant).
//
// Partition links carry a "-partN" suffix and never match.
const (
	virtioLinkPrefix = "virtio-"
	scsiLinkPrefix   = "scsi-"
	// virtioSerialBytes is how much of a serial a virtio-blk guest sees.
	virtioSerialBytes = tccsi.MaxSerialLen
	// maxSerialLen bounds serials read from publish_context; SCSI serials may be longer than
	// virtio's 20 bytes, but nothing sane is longer than this.
	maxSerialLen = 64
)

// guestSerial is the serial a guest reads for a disk plugged on bus with serial.
func guestSerial(serial, bus string) string {
	if bus == tccsi.BusVirtio && len(serial) > virtioSerialBytes {
		return serial[:virtioSerialBytes]
	}
	return serial
}

// isDiskLink reports whether name is a by-id entry udev creates for the disk with serial on
// bus; bus "" accepts either bus.
func isDiskLink(name, serial, bus string) bool {
	// Directory entries never hold a separator; a name that does is not one, whatever it ends in.
	if strings.ContainsRune(name, '/') {
		return false
	}
	switch bus {
	case tccsi.BusVirtio:
		return name == virtioLinkPrefix+guestSerial(serial, bus)
	case tccsi.BusSCSI:
		// The "_" anchors the serial so that serial "bc" does not match "…_abc".
		return strings.HasPrefix(name, scsiLinkPrefix) && strings.HasSuffix(name, "_"+serial)
	case "":
		return isDiskLink(name, serial, tccsi.BusVirtio) || isDiskLink(name, serial, tccsi.BusSCSI)
	default:
		return false
	}
}

// matchDiskLinks returns the entries of a by-id directory that name the disk with serial on
// bus, in the order given.
func matchDiskLinks(names []string, serial, bus string) []string {
	var out []string
	for _, n := range names {
		if isDiskLink(n, serial, bus) {
			out = append(out, n)
		}
	}
	return out
}

// validateSerial rejects serials that cannot appear in a by-id name: udev would mangle them, or
// they could escape the directory.
func validateSerial(serial string) error {
	if serial == "" {
		return fmt.Errorf("serial is empty")
	}
	if len(serial) > maxSerialLen {
		return fmt.Errorf("serial %q is longer than %d bytes", serial, maxSerialLen)
	}
	for _, r := range serial {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("serial %q contains %q; only letters, digits, '-', '_' and '.' are allowed", serial, r)
		}
	}
	return nil
}

// validateBus accepts the buses KubeVirt can hot-plug, and "" for unknown.
func validateBus(bus string) error {
	switch bus {
	case "", tccsi.BusVirtio, tccsi.BusSCSI:
		return nil
	}
	return fmt.Errorf("bus %q is not hot-pluggable (want %q or %q)", bus, tccsi.BusSCSI, tccsi.BusVirtio)
}
