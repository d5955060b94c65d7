package node

import (
	"path/filepath"
	"strings"
	"testing"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// guestLinks are the by-id names a Linux guest gives a disk with serial on bus (the rules the
// simulator's disks use too): what a real directory would hold.
func guestLinks(serial, bus string) []string {
	if bus == tccsi.BusVirtio {
		return []string{"virtio-" + guestSerial(serial, bus)}
	}
	return []string{"scsi-0QEMU_QEMU_HARDDISK_" + serial, "scsi-SQEMU_QEMU_HARDDISK_" + serial}
}

// FuzzDeviceMatch: the serial in publish_context is checked, then matched against a by-id
// directory. A serial that validates can never make a match escape the directory; a disk is
// always found by its own serial; and the disk of one volume is never taken for another's:
// for the serials the controller derives (tccsi.Serial), no link of one matches the other.
func FuzzDeviceMatch(f *testing.F) {
	for _, s := range [][4]string{
		{"pvc-1", "pvc-2", "scsi", "scsi-0QEMU_QEMU_HARDDISK_abc"}, {"a", "b", "virtio", "virtio-abc"},
		{"x_abc", "abc", "scsi", "scsi-0QEMU_QEMU_HARDDISK_x_abc"}, {"../../etc", "x", "", "scsi-0QEMU_QEMU_HARDDISK_../../etc"},
		{strings.Repeat("a", 30), strings.Repeat("a", 25), "virtio", "virtio-aaaaaaaaaaaaaaaaaaaa"},
		{"vol", "vol", "sata", "ata-QEMU_HARDDISK_vol"}, {"", "", "", "virtio-"}, {"ü", "u", "scsi", "scsi-_ü"},
		{"abc", "abc-part1", "scsi", "scsi-0QEMU_QEMU_HARDDISK_abc-part1"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, volA, volB, bus, name string) {
		for _, serial := range []string{volA, tccsi.Serial(volA)} {
			if validateSerial(serial) != nil || validateBus(bus) != nil {
				continue // NodeStage refuses before matching
			}
			for _, m := range matchDiskLinks([]string{name}, serial, bus) {
				if strings.ContainsRune(m, '/') || m == "." || m == ".." || filepath.Base(m) != m {
					t.Fatalf("serial %q matched %q, which escapes the directory", serial, m)
				}
			}
			buses := []string{bus}
			if bus == "" {
				buses = []string{tccsi.BusSCSI, tccsi.BusVirtio}
			}
			for _, b := range buses {
				for _, l := range guestLinks(serial, b) {
					if !isDiskLink(l, serial, bus) {
						t.Fatalf("disk %q on %s (link %q) not found with bus %q", serial, b, l, bus)
					}
				}
			}
		}
		// Derived serials never cross-match, on any bus.
		a, b := tccsi.Serial(volA), tccsi.Serial(volB)
		if a == b {
			return
		}
		for _, onBus := range []string{tccsi.BusSCSI, tccsi.BusVirtio} {
			for _, l := range guestLinks(b, onBus) {
				for _, want := range []string{"", tccsi.BusSCSI, tccsi.BusVirtio} {
					if isDiskLink(l, a, want) {
						t.Fatalf("link %q of volume %q matches volume %q's serial %q (bus %q)", l, volB, volA, a, want)
					}
				}
			}
		}
	})
}

// FuzzPathUnder: a path the node accepts is clean, absolute, strictly inside the kubelet
// directory and has no ".." element, whatever the CO sent.
func FuzzPathUnder(f *testing.F) {
	const root = "/var/lib/kubelet"
	for _, s := range []string{
		root + "/pods/p/volumes/x/mount", root, root + "/", root + "/../etc", root + "/pods/../../etc", root + "x/y",
		"/etc/passwd", "relative/path", root + "/a\x00b", root + "//pods//./x/", "/var/lib/kubelet/ü/🙂",
		root + "/" + strings.Repeat("a/", 200),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c, err := pathUnder(root, p)
		if err != nil {
			if c != "" {
				t.Fatalf("refused %q yielded %q", p, c)
			}
			return
		}
		if c != filepath.Clean(c) || !filepath.IsAbs(c) || !strings.HasPrefix(c, root+"/") || c == root {
			t.Fatalf("%q accepted as %q", p, c)
		}
		if strings.Contains(p, "..") && strings.Contains("/"+p+"/", "/../") {
			t.Fatalf("%q with a '..' element accepted", p)
		}
		if strings.ContainsRune(c, 0) {
			t.Fatalf("%q with NUL accepted", p)
		}
	})
}
