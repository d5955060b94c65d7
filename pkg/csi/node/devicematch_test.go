package node

import (
	"slices"
	"strings"
	"testing"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

func TestMatchDiskLinks(t *testing.T) {
	const serial = "abcdefghijklmnopqrst" // 20 bytes, as csi.Serial makes them
	long := serial + "uvwxyz"             // 26 bytes: virtio guests see only the first 20
	dir := []string{
		"virtio-" + serial,
		"virtio-" + serial + "-part1",
		"scsi-0QEMU_QEMU_HARDDISK_" + serial,
		"scsi-SQEMU_QEMU_HARDDISK_" + serial,
		"scsi-0QEMU_QEMU_HARDDISK_" + serial + "-part1",
		"scsi-0QEMU_QEMU_HARDDISK_x" + serial, // a different, longer serial ending in ours
		"scsi-0QEMU_QEMU_HARDDISK_" + long,
		"wwn-0x5000c500a0b1c2d3",
		"ata-QEMU_HARDDISK_QM00001",
		"virtio-other",
	}
	tests := []struct {
		name, serial, bus string
		want              []string
	}{
		{"virtio exact", serial, tccsi.BusVirtio, []string{"virtio-" + serial}},
		{"virtio truncates long serials", long, tccsi.BusVirtio, []string{"virtio-" + serial}},
		{"scsi keeps long serials", long, tccsi.BusSCSI, []string{"scsi-0QEMU_QEMU_HARDDISK_" + long}},
		{"scsi both id types, no partitions, anchored at _", serial, tccsi.BusSCSI,
			[]string{"scsi-0QEMU_QEMU_HARDDISK_" + serial, "scsi-SQEMU_QEMU_HARDDISK_" + serial}},
		{"unknown bus accepts both", serial, "", []string{
			"virtio-" + serial, "scsi-0QEMU_QEMU_HARDDISK_" + serial, "scsi-SQEMU_QEMU_HARDDISK_" + serial}},
		{"short serial does not match by prefix", "abcdefghij", "", nil},
		{"suffix of a serial does not match", "bcdefghijklmnopqrst", tccsi.BusSCSI, nil},
		{"unsupported bus matches nothing", serial, "ide", nil},
		{"absent serial", "zzzzzzzzzzzzzzzzzzzz", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchDiskLinks(dir, tt.serial, tt.bus); !slices.Equal(got, tt.want) {
				t.Errorf("matchDiskLinks(%q, %q) = %q, want %q", tt.serial, tt.bus, got, tt.want)
			}
		})
	}
}

func TestMatchesDerivedSerial(t *testing.T) {
	// The controller plugs csi.Serial(volumeID); the node must find it on both buses.
	s := tccsi.Serial("pvc-0a1b2c3d")
	for _, link := range []string{"virtio-" + s, "scsi-0QEMU_QEMU_HARDDISK_" + s} {
		if !isDiskLink(link, s, "") {
			t.Errorf("%s is not recognised as the disk of serial %s", link, s)
		}
	}
}

func TestValidateSerial(t *testing.T) {
	tests := []struct {
		serial  string
		wantErr string
	}{
		{tccsi.Serial("v"), ""},
		{"ABC-def_1.2", ""},
		{"", "empty"},
		{"a/b", `contains '/'`},
		{"..", ""}, // harmless: it can only be part of a longer link name
		{"a b", `contains ' '`},
		{strings.Repeat("a", 65), "longer than 64"},
	}
	for _, tt := range tests {
		err := validateSerial(tt.serial)
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("validateSerial(%q) = %v, want error containing %q", tt.serial, err, tt.wantErr)
		}
	}
}

func TestValidateBus(t *testing.T) {
	for bus, ok := range map[string]bool{"": true, "scsi": true, "virtio": true, "sata": false, "SCSI": false} {
		if err := validateBus(bus); (err == nil) != ok {
			t.Errorf("validateBus(%q) = %v, want ok=%v", bus, err, ok)
		}
	}
}
