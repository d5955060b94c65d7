package controller

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

func TestVolumeID(t *testing.T) {
	long := strings.Repeat("x", 128)
	tests := []struct {
		cluster, name string
	}{
		{"alpha", "pvc-0c4f3b2e-6d1a-4c9e-9a59-1f1a2b3c4d5e"},
		{"alpha", long},
		{"beta", "pvc-0c4f3b2e-6d1a-4c9e-9a59-1f1a2b3c4d5e"},
		{"alpha", "UPPER case ünïcode/with/slashes"},
		{"a", ""},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		id := VolumeID(tt.cluster, tt.name)
		if again := VolumeID(tt.cluster, tt.name); again != id {
			t.Errorf("VolumeID(%q, %q) not deterministic: %q then %q", tt.cluster, tt.name, id, again)
		}
		if errs := validation.IsDNS1123Label(id); len(errs) > 0 {
			t.Errorf("VolumeID(%q, %q) = %q is not a DNS-1123 label: %v", tt.cluster, tt.name, id, errs)
		}
		if len(id) > 63 || !strings.HasPrefix(id, VolumeIDPrefix) || !IsVolumeID(id) || IsSnapshotID(id) {
			t.Errorf("VolumeID(%q, %q) = %q: bad form", tt.cluster, tt.name, id)
		}
		if prev, dup := seen[id]; dup {
			t.Errorf("VolumeID collision between %s and %s/%s", prev, tt.cluster, tt.name)
		}
		seen[id] = tt.cluster + "/" + tt.name
		if s := tccsi.Serial(id); len(s) > tccsi.MaxSerialLen {
			t.Errorf("serial of %q is %d characters", id, len(s))
		}
	}
	// A volume and a snapshot of the same name never share a hash.
	if v, s := VolumeID("c", "n"), SnapshotID("c", "n"); strings.TrimPrefix(v, VolumeIDPrefix) == strings.TrimPrefix(s, SnapshotIDPrefix) {
		t.Errorf("volume and snapshot IDs share a hash: %s %s", v, s)
	}
	if s := SnapshotID("c", "n"); !IsSnapshotID(s) || IsVolumeID(s) || len(validation.IsDNS1123Label(s)) > 0 {
		t.Errorf("SnapshotID = %q: bad form", s)
	}
}

// TestIDsPinned pins derived IDs to literal values. Every DataVolume and VolumeSnapshot
// csi-controller created is found again only by re-deriving its name from the CSI name, and
// PVs store the volume ID as their handle: a change here (hash, encoding, input layout,
// prefix) orphans every existing volume after an upgrade. These values must never change
// (docs/contracts.md).
func TestIDsPinned(t *testing.T) {
	const pvc = "pvc-0c4f3b2e-6d1a-4c9e-9a59-1f1a2b3c4d5e"
	tests := []struct{ got, want string }{
		{VolumeID("alpha", pvc), "tc-onkhejwad5e4jludahyh7s4fkjgoi577"},
		{VolumeID("beta", pvc), "tc-eaaecmv5anrqojjfgs2cpckueoxaqlb3"},
		{VolumeID("alpha", "UPPER case ünïcode/with/slashes"), "tc-izryezdw325flst7arlopt7qk5dhn55h"},
		{SnapshotID("alpha", "snapshot-6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"), "tcs-2gfadxejkiu5ng54otxwqpn257lwfeox"},
		// The disk serial of a volume, as csi-node looks for it under /dev/disk/by-id.
		{tccsi.Serial(VolumeID("alpha", pvc)), "6ez6qblgbgotwtxu5j6r"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("#%d: derived %q, pinned %q: a stored identity changed", i, tt.got, tt.want)
		}
	}
}

func TestIDForm(t *testing.T) {
	valid := VolumeID("alpha", "x")
	tests := []struct {
		id   string
		want bool
	}{
		{valid, true},
		{"tc-" + strings.Repeat("a", 32), true},
		{"tc-" + strings.Repeat("2", 32), true},
		{"tc-" + strings.Repeat("a", 31), false},
		{"tc-" + strings.Repeat("a", 33), false},
		{"tc-" + strings.Repeat("A", 32), false}, // uppercase
		{"tc-" + strings.Repeat("1", 32), false}, // not base32
		{"tc-" + strings.Repeat("8", 32), false},
		{"tcs-" + strings.Repeat("a", 32), false},
		{"worker-1-rootdisk", false},
		{"fake-vol-id", false},
		{"", false},
		{"tc-../" + strings.Repeat("a", 29), false},
	}
	for _, tt := range tests {
		if got := IsVolumeID(tt.id); got != tt.want {
			t.Errorf("IsVolumeID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestValidateNameAndID(t *testing.T) {
	tests := []struct {
		value   string
		nameOK  bool
		idOK    bool
		wantMsg string
	}{
		{"pvc-1", true, true, ""},
		{"", false, false, "is required"},
		{strings.Repeat("n", 128), true, true, ""},
		{strings.Repeat("n", 129), true, false, "longer than 128"},
		{strings.Repeat("n", 1025), false, false, "longer than"},
		{"a\nb", false, false, "control characters"},
	}
	for _, tt := range tests {
		if err := validateName("name", tt.value); (err == nil) != tt.nameOK || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
			t.Errorf("validateName(%.20q) = %v, want ok=%v", tt.value, err, tt.nameOK)
		}
		if err := validateID("volume_id", tt.value); (err == nil) != tt.idOK || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
			t.Errorf("validateID(%.20q) = %v, want ok=%v", tt.value, err, tt.idOK)
		}
	}
}
