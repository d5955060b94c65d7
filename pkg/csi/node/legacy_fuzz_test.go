package node

import (
	"strings"
	"testing"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// FuzzLegacySerialOfLink: a by-id name read as an adopted volume's disk link never escapes the
// directory, always carries a UID-form serial that the SCSI matcher agrees names that disk,
// and every SCSI link a guest gives a UID-serial disk is recognised.
func FuzzLegacySerialOfLink(f *testing.F) {
	for _, s := range []string{
		"scsi-0QEMU_QEMU_HARDDISK_" + legacyUID, "scsi-0QEMU_QEMU_HARDDISK_" + legacyUID + "-part1",
		"virtio-" + legacyUID[:20], "a/scsi-x_" + legacyUID, "_" + legacyUID, "scsi-" + legacyUID, "",
	} {
		f.Add(s, legacyUID)
	}
	f.Fuzz(func(t *testing.T, name, uid string) {
		if serial, ok := legacySerialOfLink(name); ok {
			if strings.ContainsRune(name, '/') || !tccsi.IsCanonicalUID(serial) || !isDiskLink(name, serial, tccsi.BusSCSI) {
				t.Fatalf("legacySerialOfLink(%q) = %q: not a SCSI link of a UID serial", name, serial)
			}
		}
		if !tccsi.IsCanonicalUID(uid) {
			return
		}
		for _, l := range guestLinks(uid, tccsi.BusSCSI) {
			if got, ok := legacySerialOfLink(l); !ok || got != uid {
				t.Fatalf("guest link %q of serial %q read as %q, %v", l, uid, got, ok)
			}
		}
	})
}
