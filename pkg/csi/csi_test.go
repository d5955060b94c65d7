package csi

import (
	"regexp"
	"testing"
)

func TestSerial(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z2-7]{20}$`)
	seen := map[string]string{}
	for _, id := range []string{"tc-a", "tc-b", "tc-" + string(make([]byte, 300)), "pvc-0b1c", ""} {
		s := Serial(id)
		if !valid.MatchString(s) {
			t.Errorf("Serial(%q) = %q: want 20 lowercase base32 characters", id, s)
		}
		if s != Serial(id) {
			t.Errorf("Serial(%q) is not deterministic", id)
		}
		if other, dup := seen[s]; dup {
			t.Errorf("Serial collision between %q and %q", id, other)
		}
		seen[s] = id
	}
}

// TestSerialPinned pins serials to literal values: a disk is hot-plugged with its serial and
// csi-node finds it by that serial in the guest, across csi-controller and csi-node versions
// and upgrades, so the derivation must never change (docs/contracts.md).
func TestSerialPinned(t *testing.T) {
	for id, want := range map[string]string{
		"tc-onkhejwad5e4jludahyh7s4fkjgoi577": "6ez6qblgbgotwtxu5j6r",
		"tc-a":                                "6teflngiksziw4xsd2ft",
		"pvc-0b1c":                            "koly3xaftpkawctstknd",
		"":                                    "4oymiquy7qobjgx36tej",
	} {
		if got := Serial(id); got != want {
			t.Errorf("Serial(%q) = %q, pinned %q: a stored identity changed", id, got, want)
		}
	}
}
