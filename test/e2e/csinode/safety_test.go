package csinode

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// TestVolumeHealthAfterDetach: when the disk disappears from under a mounted volume, health
// turns INACCESSIBLE naming the serial, stats keep answering, and unpublish/unstage still
// clean up, after which the loop device is released.
func TestVolumeHealthAfterDetach(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	const vol = "pvc-gone"
	dev := e.plug(v, e.newBacking(vol, 64<<20), vol, tccsi.BusSCSI)
	capability := fsCap("ext4", rwo)
	staging := v.stagingPath(t, vol)
	target := v.targetPath(t, "pod-1", vol)
	must(t, "NodeStage", v.stage(vol, tccsi.BusSCSI, staging, capability))
	must(t, "NodePublish", v.publish(vol, tccsi.BusSCSI, staging, target, capability, false))

	health := func() *csi.VolumeHealth {
		rsp, err := v.node.NodeGetVolumeHealth(ctx(t), &csi.NodeGetVolumeHealthRequest{
			VolumeId: vol, VolumePublishPath: target, StagingTargetPath: staging})
		must(t, "NodeGetVolumeHealth", err)
		return rsp.GetVolumeHealth()
	}
	if h := health(); len(h.GetHealthStatuses()) != 0 || h.GetVolumeId() != vol {
		t.Fatalf("healthy volume reports %v", h)
	}
	// The volume ID alone is enough while the disk is there (csi-sanity asks like this).
	if _, err := v.node.NodeGetVolumeHealth(ctx(t), &csi.NodeGetVolumeHealthRequest{VolumeId: vol}); err != nil {
		t.Errorf("NodeGetVolumeHealth by volume ID only: %v", err)
	}

	e.unplug(v, vol, dev)
	h := health()
	if len(h.GetHealthStatuses()) != 1 {
		t.Fatalf("health after the disk vanished = %v, want one entry", h)
	}
	entry := h.GetHealthStatuses()[0]
	if entry.GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE || entry.GetReason() != "DiskDetached" ||
		!strings.Contains(entry.GetMessage(), tccsi.Serial(vol)) || !strings.Contains(entry.GetMessage(), target) {
		t.Errorf("health entry = %v, want INACCESSIBLE DiskDetached naming the serial and %s", entry, target)
	}
	if _, err := v.node.NodeGetVolumeStats(ctx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: target}); err != nil {
		t.Errorf("stats of a mounted volume whose disk vanished: %v", err)
	}

	must(t, "NodeUnpublish after the disk vanished", v.unpublish(vol, target))
	must(t, "NodeUnstage after the disk vanished", v.unstage(vol, staging))
	eventually(t, 10*time.Second, "release of "+dev, func() bool {
		loops, _ := loopsUnder(e.root)
		return !slices.Contains(loops, dev)
	})
	if _, err := v.node.NodeGetVolumeHealth(ctx(t), &csi.NodeGetVolumeHealthRequest{VolumeId: vol}); status.Code(err) != codes.NotFound {
		t.Errorf("health of a volume that left the VM: %v, want NotFound", err)
	}
}

// TestHealthReportsUnmountedPath: the disk is attached but not where the CO expects it.
func TestHealthReportsUnmountedPath(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	const vol = "pvc-health"
	e.plug(v, e.newBacking(vol, 64<<20), vol, tccsi.BusVirtio)
	target := v.targetPath(t, "pod-1", vol)
	rsp, err := v.node.NodeGetVolumeHealth(ctx(t), &csi.NodeGetVolumeHealthRequest{VolumeId: vol, VolumePublishPath: target})
	must(t, "NodeGetVolumeHealth", err)
	st := rsp.GetVolumeHealth().GetHealthStatuses()
	if len(st) != 1 || st[0].GetReason() != "NotMounted" || !strings.Contains(st[0].GetMessage(), target) {
		t.Errorf("health = %v, want NotMounted naming %s", st, target)
	}
}

// TestNeverTouchForeignMounts: unpublish/unstage refuse to unmount anything that is not the
// volume's disk, stage refuses a staging path holding another disk, and unstage refuses while
// the volume is still published.
func TestNeverTouchForeignMounts(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	const volA, volB = "pvc-a", "pvc-b"
	e.plug(v, e.newBacking(volA, 64<<20), volA, tccsi.BusSCSI)
	e.plug(v, e.newBacking(volB, 64<<20), volB, tccsi.BusSCSI)
	capability := fsCap("ext4", rwo)
	stagingA, stagingB := v.stagingPath(t, volA), v.stagingPath(t, volB)
	must(t, "NodeStage A", v.stage(volA, tccsi.BusSCSI, stagingA, capability))
	must(t, "NodeStage B", v.stage(volB, tccsi.BusSCSI, stagingB, capability))

	// A tmpfs where a pod's target would be, e.g. another driver's volume.
	tmpfs := v.targetPath(t, "pod-other", "some-other-volume")
	if err := os.MkdirAll(tmpfs, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		err  error
		path string
	}{
		{"unpublish of a tmpfs", v.unpublish(volA, tmpfs), tmpfs},
		{"unstage of another volume's staging path", v.unstage(volA, stagingB), stagingB},
		{"unpublish of another volume's staging path", v.unpublish(volA, stagingB), stagingB},
	} {
		if status.Code(tt.err) != codes.FailedPrecondition || !strings.Contains(tt.err.Error(), "refusing to unmount") {
			t.Errorf("%s: %v, want FailedPrecondition", tt.name, tt.err)
		}
		if _, mounted := mountAt(t, tt.path); !mounted {
			t.Errorf("%s: %s was unmounted", tt.name, tt.path)
		}
	}
	if err := v.stage(volA, tccsi.BusSCSI, stagingB, capability); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("staging A where B is staged: %v, want FailedPrecondition", err)
	}

	target := v.targetPath(t, "pod-1", volA)
	must(t, "NodePublish A", v.publish(volA, tccsi.BusSCSI, stagingA, target, capability, false))
	err := v.unstage(volA, stagingA)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), target) {
		t.Errorf("unstage while published: %v, want FailedPrecondition naming %s", err, target)
	}
	if err := v.publish(volB, tccsi.BusSCSI, stagingB, target, capability, false); status.Code(err) != codes.AlreadyExists {
		t.Errorf("publishing B onto A's target: %v, want AlreadyExists", err)
	}
	must(t, "NodeUnpublish A", v.unpublish(volA, target))
	must(t, "NodeUnstage A", v.unstage(volA, stagingA))
	must(t, "NodeUnstage B", v.unstage(volB, stagingB))
	if err := unix.Unmount(tmpfs, 0); err != nil {
		t.Error(err)
	}
}
