package controller

import (
	"strings"
	"testing"
	"unicode"

	"k8s.io/apimachinery/pkg/util/validation"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// FuzzIDs: whatever CSI name a CO (so a tenant, through PVC names) chooses, the derived
// volume and snapshot IDs are DNS-1123 labels of the documented form that IsVolumeID /
// IsSnapshotID recognise, never each other's, depend on the cluster (two clusters sharing a
// namespace never derive the same DataVolume name), and yield a serial QEMU keeps intact.
// Conversely, any string that passes IsVolumeID is a valid object name, so no API path is
// ever built from anything else.
func FuzzIDs(f *testing.F) {
	for _, s := range [][3]string{
		{"alpha", "pvc-1", "tc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, {"beta", "pvc-1", "tcs-22222222222222222222222222222222"},
		{"alpha", "", "tc-"}, {"alpha", strings.Repeat("n", 1025), "../tc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
		{"alpha", "ü\x00", "tc-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, {"a", "b\x00c", "tc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"},
		{"alpha", "pvc", "tc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, cluster, name, id string) {
		vol, snap := VolumeID(cluster, name), SnapshotID(cluster, name)
		for _, x := range []string{vol, snap} {
			if msgs := validation.IsDNS1123Label(x); len(msgs) > 0 {
				t.Fatalf("derived id %q is not a DNS label: %v", x, msgs)
			}
			if validateID("id", x) != nil {
				t.Fatalf("derived id %q fails validateID", x)
			}
		}
		if !IsVolumeID(vol) || IsSnapshotID(vol) || !IsSnapshotID(snap) || IsVolumeID(snap) {
			t.Fatalf("ids %q %q misclassified", vol, snap)
		}
		if other := cluster + "x"; VolumeID(other, name) == vol {
			t.Fatalf("clusters %q and %q derive the same volume id for %q", cluster, other, name)
		}
		if s := tccsi.Serial(vol); len(s) != tccsi.MaxSerialLen || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsLower(r) && !unicode.IsDigit(r) }) {
			t.Fatalf("serial %q of %q", s, vol)
		}
		if IsVolumeID(id) || IsSnapshotID(id) {
			if msgs := validation.IsDNS1123Label(id); len(msgs) > 0 {
				t.Fatalf("%q passes the id form but is not a DNS label: %v", id, msgs)
			}
		}
		if err := validateName("name", name); err == nil && (name == "" || len(name) > maxNameLen || strings.ContainsFunc(name, unicode.IsControl)) {
			t.Fatalf("name %q accepted", name)
		}
	})
}
