package node

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	legacyID  = "pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b"
	legacyUID = "7d3c1c3e-55b1-4f4e-8a57-1b2d3c4e5f60"
)

func TestLegacySerialOfLink(t *testing.T) {
	for name, want := range map[string]string{
		"scsi-0QEMU_QEMU_HARDDISK_" + legacyUID:            legacyUID,
		"scsi-SQEMU_QEMU_HARDDISK_" + legacyUID:            legacyUID,
		"scsi-0QEMU_QEMU_HARDDISK_" + legacyUID + "-part1": "",
		"scsi-0QEMU_QEMU_HARDDISK_x" + legacyUID:           "",
		"virtio-" + legacyUID[:20]:                         "",
		"scsi-0QEMU_QEMU_HARDDISK_abcdefghijklmnopqrst":    "",
		"a/scsi-0QEMU_QEMU_HARDDISK_" + legacyUID:          "",
		"_" + legacyUID: "",
	} {
		got, ok := legacySerialOfLink(name)
		if got != want || ok != (want != "") {
			t.Errorf("legacySerialOfLink(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

func TestLegacyDiskFromContext(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pc, vc   map[string]string
		serial   string
		bus      string
		wantCode codes.Code
	}{
		{"published by csi-controller", map[string]string{"serial": legacyUID, "bus": "scsi"}, nil, legacyUID, "scsi", codes.OK},
		{"attached by upstream: volume_context", nil, map[string]string{"serial": legacyUID, "bus": "scsi"}, legacyUID, "scsi", codes.OK},
		{"publish_context wins", map[string]string{"serial": legacyUID}, map[string]string{"serial": "11111111-1111-1111-1111-111111111111"}, legacyUID, "", codes.OK},
		{"no serial anywhere", nil, nil, "", "", codes.InvalidArgument},
		{"serial of a native volume", map[string]string{"serial": "abcdefghijklmnopqrst"}, nil, "", "", codes.InvalidArgument},
		{"path in the serial", nil, map[string]string{"serial": "../../sda"}, "", "", codes.InvalidArgument},
		{"unknown bus", nil, map[string]string{"serial": legacyUID, "bus": "sata"}, "", "", codes.InvalidArgument},
	} {
		serial, bus, err := diskFromContext(legacyID, tc.pc, tc.vc)
		if status.Code(err) != tc.wantCode || serial != tc.serial || bus != tc.bus {
			t.Errorf("%s: diskFromContext = %q, %q, %v; want %q, %q, %v", tc.name, serial, bus, err, tc.serial, tc.bus, tc.wantCode)
		}
	}
}
