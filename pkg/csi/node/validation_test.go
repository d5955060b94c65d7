package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPathUnder(t *testing.T) {
	const root = "/var/lib/kubelet"
	tests := []struct {
		path    string
		want    string
		wantErr string
	}{
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pv1/mount", "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pv1/mount", ""},
		{"/var/lib/kubelet/plugins/kubernetes.io/csi/csi.tenantcloud.io/abc/globalmount/", "/var/lib/kubelet/plugins/kubernetes.io/csi/csi.tenantcloud.io/abc/globalmount", ""},
		{"/var/lib/kubelet//pods/x", "/var/lib/kubelet/pods/x", ""},
		{"/var/lib/kubelet/./pods/x", "/var/lib/kubelet/pods/x", ""},
		{"", "", "is empty"},
		{"var/lib/kubelet/pods/x", "", "not an absolute path"},
		{"some/path", "", "not an absolute path"},
		{"/var/lib/kubelet/pods/../../../etc", "", "'..'"},
		{"/var/lib/kubelet/..", "", "'..'"},
		{"/var/lib/kubelet", "", "not inside"},
		{"/var/lib/kubelet/", "", "not inside"},
		{"/var/lib/kubelet-other/pods/x", "", "not inside"},
		{"/etc/passwd", "", "not inside"},
		{"/var/lib/kubelet/a\x00b", "", "NUL"},
	}
	for _, tt := range tests {
		got, err := pathUnder(root, tt.path)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("pathUnder(%q) = %q, %v; want error containing %q", tt.path, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("pathUnder(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
}

func TestResolvePathSymlinks(t *testing.T) {
	base := t.TempDir()
	kubelet := filepath.Join(base, "kubelet")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(kubelet, "pods"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A kubelet directory reached through a symlink, as on hosts that move /var/lib/kubelet.
	link := filepath.Join(base, "kubelet-link")
	if err := os.Symlink(kubelet, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(kubelet, "pods", "escape")); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{NodeID: "vm-1", KubeletDir: link})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		want     string
		wantCode codes.Code
	}{
		{filepath.Join(link, "pods", "new", "mount"), filepath.Join(kubelet, "pods", "new", "mount"), codes.OK},
		{filepath.Join(link, "pods"), filepath.Join(kubelet, "pods"), codes.OK},
		{filepath.Join(link, "pods", "escape", "mount"), "", codes.InvalidArgument},
		{filepath.Join(kubelet, "pods", "x"), "", codes.InvalidArgument}, // not spelled under the configured dir
		{"", "", codes.InvalidArgument},
	}
	for _, tt := range tests {
		got, err := s.resolvePath("target_path", tt.path)
		if status.Code(err) != tt.wantCode || got != tt.want {
			t.Errorf("resolvePath(%q) = %q, %v; want %q, %v", tt.path, got, err, tt.want, tt.wantCode)
		}
		if err != nil && !strings.Contains(err.Error(), "target_path") {
			t.Errorf("resolvePath(%q) error %q does not name the field", tt.path, err)
		}
	}
}

func TestValidateVolumeID(t *testing.T) {
	for id, ok := range map[string]bool{
		"pvc-1":                  true,
		"":                       false,
		strings.Repeat("a", 128): true,
		strings.Repeat("a", 129): false,
		"a\nb":                   false,
	} {
		err := validateVolumeID(id)
		if (err == nil) != ok || err != nil && status.Code(err) != codes.InvalidArgument {
			t.Errorf("validateVolumeID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestParseCapability(t *testing.T) {
	mode := func(m csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability_AccessMode {
		return &csi.VolumeCapability_AccessMode{Mode: m}
	}
	mnt := func(fs string, flags ...string) *csi.VolumeCapability_Mount {
		return &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs, MountFlags: flags}}
	}
	block := &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	rwo := mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	tests := []struct {
		name     string
		cap      *csi.VolumeCapability
		want     volumeSpec
		wantCode codes.Code
	}{
		{"nil", nil, volumeSpec{}, codes.InvalidArgument},
		{"no access mode", &csi.VolumeCapability{AccessType: mnt("")}, volumeSpec{}, codes.InvalidArgument},
		{"no access type", &csi.VolumeCapability{AccessMode: rwo}, volumeSpec{}, codes.InvalidArgument},
		{"default fs", &csi.VolumeCapability{AccessMode: rwo, AccessType: mnt("")},
			volumeSpec{fsType: "ext4", mode: rwo.Mode}, codes.OK},
		{"xfs with flags", &csi.VolumeCapability{AccessMode: rwo, AccessType: mnt("xfs", "noatime")},
			volumeSpec{fsType: "xfs", mountFlags: []string{"noatime"}, mode: rwo.Mode}, codes.OK},
		{"unsupported fs", &csi.VolumeCapability{AccessMode: rwo, AccessType: mnt("btrfs")}, volumeSpec{}, codes.InvalidArgument},
		{"empty flag", &csi.VolumeCapability{AccessMode: rwo, AccessType: mnt("ext4", " ")}, volumeSpec{}, codes.InvalidArgument},
		{"rwx filesystem", &csi.VolumeCapability{AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), AccessType: mnt("ext4")},
			volumeSpec{}, codes.InvalidArgument},
		{"rox filesystem", &csi.VolumeCapability{AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY), AccessType: mnt("ext4")},
			volumeSpec{fsType: "ext4", mode: csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY}, codes.OK},
		{"rwx block", &csi.VolumeCapability{AccessMode: mode(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), AccessType: block},
			volumeSpec{block: true, mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCapability(tt.cap)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("parseCapability = %v, want code %v", err, tt.wantCode)
			}
			if got.block != tt.want.block || got.fsType != tt.want.fsType || got.mode != tt.want.mode ||
				strings.Join(got.mountFlags, ",") != strings.Join(tt.want.mountFlags, ",") {
				t.Errorf("parseCapability = %+v, want %+v", got, tt.want)
			}
		})
	}
	ro, _ := parseCapability(&csi.VolumeCapability{AccessMode: mode(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY), AccessType: mnt("")})
	if !ro.readOnly() {
		t.Error("SINGLE_NODE_READER_ONLY is not read-only")
	}
}
