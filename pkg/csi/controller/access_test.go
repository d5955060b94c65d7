package controller

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func mountCap(m csi.VolumeCapability_AccessMode_Mode, fs string) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: m},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}}}
}

func blockCap(m csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: m},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}
}

const (
	sw   = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	ssw  = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	smw  = csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
	sro  = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	mro  = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	msw  = csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER
	mmw  = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	rwo  = corev1.ReadWriteOnce
	rwx  = corev1.ReadWriteMany
	blk  = corev1.PersistentVolumeBlock
	fsys = corev1.PersistentVolumeFilesystem
)

func TestCapabilities(t *testing.T) {
	blockCfg := config.Storage{VolumeMode: config.VolumeModeBlock}
	fsCfg := config.Storage{VolumeMode: config.VolumeModeFilesystem}
	tests := []struct {
		name    string
		caps    []*csi.VolumeCapability
		cfg     config.Storage
		want    infraLayout
		wantErr string
	}{
		{"RWO mount", []*csi.VolumeCapability{mountCap(sw, "")}, blockCfg, infraLayout{rwo, blk}, ""},
		{"RWO mount xfs", []*csi.VolumeCapability{mountCap(ssw, "xfs")}, blockCfg, infraLayout{rwo, blk}, ""},
		{"RWO block", []*csi.VolumeCapability{blockCap(smw)}, blockCfg, infraLayout{rwo, blk}, ""},
		{"RWO on a filesystem infra", []*csi.VolumeCapability{mountCap(sro, "ext4")}, fsCfg, infraLayout{rwo, fsys}, ""},
		{"RWX block (live migration)", []*csi.VolumeCapability{blockCap(mmw)}, blockCfg, infraLayout{rwx, blk}, ""},
		{"RWX block forces infra Block", []*csi.VolumeCapability{blockCap(msw)}, fsCfg, infraLayout{rwx, blk}, ""},
		{"ROX mount is shared read-only", []*csi.VolumeCapability{mountCap(mro, "")}, blockCfg, infraLayout{rwx, blk}, ""},
		{"mixed single and multi", []*csi.VolumeCapability{mountCap(sw, ""), blockCap(mmw)}, blockCfg, infraLayout{rwx, blk}, ""},
		{"RWX filesystem refused", []*csi.VolumeCapability{mountCap(mmw, "")}, blockCfg, infraLayout{}, "ext4/xfs filesystem corrupt"},
		{"multi-node single writer filesystem refused", []*csi.VolumeCapability{mountCap(msw, "ext4")}, blockCfg, infraLayout{}, "corrupt"},
		{"unsupported fs", []*csi.VolumeCapability{mountCap(sw, "btrfs")}, blockCfg, infraLayout{}, `fs_type "btrfs"`},
		{"no access type", []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: sw}}}, blockCfg, infraLayout{}, "block or mount"},
		{"unknown mode", []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_UNKNOWN)}, blockCfg, infraLayout{}, "not supported"},
		{"undefined mode", []*csi.VolumeCapability{blockCap(99)}, blockCfg, infraLayout{}, "not supported"},
		{"nil capability", []*csi.VolumeCapability{nil}, blockCfg, infraLayout{}, "empty"},
		{"none", nil, blockCfg, infraLayout{}, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateCapabilities(tt.caps)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := layoutFor(tt.caps, tt.cfg); got != tt.want {
				t.Fatalf("layout %+v, want %+v", got, tt.want)
			}
		})
	}
	// The "RWX filesystem" rule in the words the brief uses.
	if err := validateCapability(mountCap(mmw, "")); err == nil || !strings.Contains(err.Error(), "use access type block") {
		t.Errorf("RWX filesystem: %v", err)
	}
}

func TestCapabilitySupported(t *testing.T) {
	tests := []struct {
		c     *csi.VolumeCapability
		modes []corev1.PersistentVolumeAccessMode
		want  bool
	}{
		{mountCap(sw, ""), []corev1.PersistentVolumeAccessMode{rwo}, true},
		{mountCap(smw, ""), []corev1.PersistentVolumeAccessMode{rwo}, true},
		{blockCap(mmw), []corev1.PersistentVolumeAccessMode{rwo}, false},
		{mountCap(mro, ""), []corev1.PersistentVolumeAccessMode{rwo}, false},
		{blockCap(mmw), []corev1.PersistentVolumeAccessMode{rwx}, true},
		{mountCap(sw, ""), []corev1.PersistentVolumeAccessMode{rwx}, true},
	}
	for _, tt := range tests {
		if got, reason := capabilitySupported(tt.c, tt.modes); got != tt.want || (!got && reason == "") {
			t.Errorf("capabilitySupported(%v, %v) = %v %q, want %v", tt.c, tt.modes, got, reason, tt.want)
		}
	}
	if !singleAttach([]corev1.PersistentVolumeAccessMode{rwo}) || singleAttach([]corev1.PersistentVolumeAccessMode{rwx}) {
		t.Error("singleAttach")
	}
	if !nodeExpansionRequired(nil) || !nodeExpansionRequired(mountCap(sw, "")) || nodeExpansionRequired(blockCap(sw)) {
		t.Error("nodeExpansionRequired")
	}
}
