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
