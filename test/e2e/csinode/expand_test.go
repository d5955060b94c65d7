package csinode

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestExpandOnline grows a mounted filesystem after the disk grew underneath it (the backing
// file grows, then `losetup -c`, which is what the guest sees on a capacity-change event), and
// checks df sees it.
func TestExpandOnline(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			e := newEnv(t)
			if fsType == "ext4" && !hasCapability(unix.CAP_SYS_RESOURCE) {
				// EXT4_IOC_RESIZE_FS checks CAP_SYS_RESOURCE; a privileged csi-node pod has it.
				harness.Require(t, harness.NeedCapSysResource,
					errors.New("ext4 online resize: this process lacks CAP_SYS_RESOURCE (resize2fs: Permission denied)"))
			}
			v := e.newVM("vm-a")
			vol := "pvc-grow-" + fsType
			size := backingSize(fsType)
			file := e.newBacking(vol, size)
			dev := e.plug(v, file, vol, tccsi.BusSCSI)
			capability := fsCap(fsType, rwo)
			staging := v.stagingPath(t, vol)
			target := v.targetPath(t, "pod-1", vol)
			must(t, "NodeStage", v.stage(vol, tccsi.BusSCSI, staging, capability))
			must(t, "NodePublish", v.publish(vol, tccsi.BusSCSI, staging, target, capability, false))
			before := dfSize(t, target)

			grown := 2 * size
			if err := os.Truncate(file, grown); err != nil {
				t.Fatal(err)
			}
			if out, err := run("losetup", "--set-capacity", dev); err != nil {
				t.Fatalf("losetup --set-capacity: %v: %s", err, out)
			}
			req := &csi.NodeExpandVolumeRequest{
				VolumeId: vol, VolumePath: target, StagingTargetPath: staging, VolumeCapability: capability,
				CapacityRange: &csi.CapacityRange{RequiredBytes: grown},
			}
			for i := range 2 { // the second call finds nothing to do
				rsp, err := v.node.NodeExpandVolume(ctx(t), req)
				must(t, "NodeExpandVolume", err)
				if rsp.GetCapacityBytes() < grown {
					t.Errorf("NodeExpandVolume #%d reports %d bytes, want >= %d", i+1, rsp.GetCapacityBytes(), grown)
				}
			}
			after := dfSize(t, target)
			if after-before < (grown-size)*3/4 {
				t.Errorf("df: %d bytes before, %d after growing the disk by %d", before, after, grown-size)
			}
			checkStats(t, v, vol, target)

			// Asked for more than the disk has: the node waits (bounded) for the disk to grow,
			// then says so; the CO retries.
			req.CapacityRange.RequiredBytes = 4 * size
			start := time.Now()
			_, err := v.node.NodeExpandVolume(ctx(t), req)
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tccsi.Serial(vol)) {
				t.Errorf("expanding beyond the disk: %v, want Unavailable naming the serial", err)
			}
			if d := time.Since(start); d < deviceWait || d > deviceWait+5*time.Second {
				t.Errorf("gave up after %s, want about %s", d, deviceWait)
			}

			// Only the disk's own mount may be expanded.
			other := v.targetPath(t, "pod-x", vol)
			if err := os.MkdirAll(other, 0o750); err != nil {
				t.Fatal(err)
			}
			req.VolumePath, req.CapacityRange = other, nil
			if _, err := v.node.NodeExpandVolume(ctx(t), req); status.Code(err) != codes.NotFound {
				t.Errorf("expanding at a path where the volume is not mounted: %v, want NotFound", err)
			}
			must(t, "NodeUnpublish", v.unpublish(vol, target))
			must(t, "NodeUnpublish (never published)", v.unpublish(vol, other))
			must(t, "NodeUnstage", v.unstage(vol, staging))
		})
	}
}

// hasCapability reports whether capability c is in this process's effective set.
func hasCapability(c int) bool {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			v, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && v&(1<<c) != 0
		}
	}
	return false
}
