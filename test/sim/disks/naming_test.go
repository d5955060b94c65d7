package disks

import "testing"

func TestLinkName(t *testing.T) {
	for _, tc := range []struct {
		name, serial, bus, want string
		wantErr                 bool
	}{
		{name: "virtio short", serial: "pvc-1234", bus: BusVirtio, want: "virtio-pvc-1234"},
		{name: "virtio exactly 20", serial: "abcdefghijklmnopqrst", bus: BusVirtio, want: "virtio-abcdefghijklmnopqrst"},
		{name: "virtio truncated to 20 bytes", serial: "abcdefghijklmnopqrstuvwxyz", bus: BusVirtio, want: "virtio-abcdefghijklmnopqrst"},
		{name: "scsi keeps the whole serial", serial: "abcdefghijklmnopqrstuvwxyz", bus: BusSCSI, want: "scsi-0QEMU_QEMU_HARDDISK_abcdefghijklmnopqrstuvwxyz"},
		{name: "no serial, no link", serial: "", bus: BusVirtio, want: ""},
		{name: "sata is not hot-pluggable", serial: "x", bus: "sata", wantErr: true},
		{name: "empty bus", serial: "x", bus: "", wantErr: true},
		{name: "slash in serial", serial: "a/b", bus: BusSCSI, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LinkName(tc.serial, tc.bus)
			if (err != nil) != tc.wantErr {
				t.Fatalf("LinkName(%q, %q) error = %v, wantErr %v", tc.serial, tc.bus, err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("LinkName(%q, %q) = %q, want %q", tc.serial, tc.bus, got, tc.want)
			}
		})
	}
}

func TestRootOf(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/tmp/x/.backing/ns/claim.img", "/tmp/x", true},
		{"/tmp/x/.backing/ns/claim.img (deleted)", "", false},
		{"/var/lib/other.img", "", false},
		{"/tmp/x/.backing/ns/claim.raw", "", false},
	} {
		got, ok := rootOf(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("rootOf(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
