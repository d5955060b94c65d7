package csinode

import (
	"bytes"
	"os"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// TestBlockVolume: a block volume is not staged; publishing bind-mounts the disk's device node
// onto a file the pod reads and writes directly.
func TestBlockVolume(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	const vol = "pvc-block"
	const size = 32 << 20
	file := e.newBacking(vol, size)
	dev := e.plug(v, file, vol, tccsi.BusVirtio)
	capability := blockCap(rwo)
	staging := v.stagingPath(t, vol)
	target := v.blockTarget(t, "pod-1", vol)

	must(t, "NodeStage (block)", v.stage(vol, tccsi.BusVirtio, staging, capability))
	if _, mounted := mountAt(t, staging); mounted {
		t.Fatal("a block volume was mounted at its staging path")
	}
	must(t, "NodePublish (block)", v.publish(vol, tccsi.BusVirtio, staging, target, capability, false))
	must(t, "NodePublish (block) again", v.publish(vol, tccsi.BusVirtio, staging, target, capability, false))

	// Write through the published device file, read back from the backing file: the bytes
	// went through the disk.
	payload := bytes.Repeat([]byte("tenantcloud!"), 4096/12+1)[:4096]
	const offset = 1 << 20
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("opening the published device: %v", err)
	}
	if _, err := f.WriteAt(payload, offset); err != nil {
		t.Fatalf("writing the published device: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("syncing the published device: %v", err)
	}
	readBack := make([]byte, len(payload))
	if _, err := f.ReadAt(readBack, offset); err != nil || !bytes.Equal(readBack, payload) {
		t.Fatalf("reading the published device back: %v", err)
	}
	f.Close()
	raw, err := os.ReadFile(file)
	if err != nil || !bytes.Equal(raw[offset:offset+len(payload)], payload) {
		t.Fatalf("the backing file does not hold what was written through %s (%v)", target, err)
	}

	rsp, err := v.node.NodeGetVolumeStats(ctx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: target})
	must(t, "NodeGetVolumeStats (block)", err)
	if u := rsp.GetUsage(); len(u) != 1 || u[0].GetUnit() != csi.VolumeUsage_BYTES || u[0].GetTotal() != size {
		t.Errorf("block stats = %v, want total %d bytes", u, size)
	}
	exp, err := v.node.NodeExpandVolume(ctx(t), &csi.NodeExpandVolumeRequest{
		VolumeId: vol, VolumePath: target, VolumeCapability: capability,
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}})
	if err != nil || exp.GetCapacityBytes() != size {
		t.Errorf("NodeExpandVolume (block) = %v, %v; want %d", exp, err, size)
	}

	// A second pod on the same node may share an RWO block volume.
	target2 := v.blockTarget(t, "pod-2", vol)
	must(t, "NodePublish (block) to a second pod", v.publish(vol, tccsi.BusVirtio, staging, target2, capability, false))

	for _, tg := range []string{target, target2, target} {
		must(t, "NodeUnpublish (block)", v.unpublish(vol, tg))
		if _, err := os.Lstat(tg); !os.IsNotExist(err) {
			t.Errorf("NodeUnpublish left %s: %v", tg, err)
		}
	}
	must(t, "NodeUnstage (block)", v.unstage(vol, staging))
	if _, err := os.Stat(dev); err != nil {
		t.Errorf("the device node is gone: %v", err)
	}
}

// TestSingleWriter: SINGLE_NODE_SINGLE_WRITER allows one publish per node;
// SINGLE_NODE_MULTI_WRITER any number. Both for filesystem and block volumes.
func TestSingleWriter(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	single := csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	multi := csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
	for _, tt := range []struct {
		name  string
		block bool
	}{{"filesystem", false}, {"block", true}} {
		t.Run(tt.name, func(t *testing.T) {
			vol := "pvc-sw-" + tt.name
			e.plug(v, e.newBacking(vol, 64<<20), vol, tccsi.BusSCSI)
			staging := v.stagingPath(t, vol)
			capOf := func(m csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
				if tt.block {
					return blockCap(m)
				}
				return fsCap("ext4", m)
			}
			target := func(pod string) string {
				if tt.block {
					return v.blockTarget(t, pod, vol)
				}
				return v.targetPath(t, pod, vol)
			}
			must(t, "NodeStage", v.stage(vol, tccsi.BusSCSI, staging, capOf(single)))
			t1, t2 := target("pod-1"), target("pod-2")
			must(t, "first publish", v.publish(vol, tccsi.BusSCSI, staging, t1, capOf(single), false))
			must(t, "first publish again", v.publish(vol, tccsi.BusSCSI, staging, t1, capOf(single), false))
			err := v.publish(vol, tccsi.BusSCSI, staging, t2, capOf(single), false)
			if status.Code(err) != codes.FailedPrecondition || !bytes.Contains([]byte(err.Error()), []byte(t1)) {
				t.Errorf("second SINGLE_NODE_SINGLE_WRITER publish: %v, want FailedPrecondition naming %s", err, t1)
			}
			if _, err := os.Lstat(t2); !os.IsNotExist(err) {
				t.Errorf("the refused publish left %s behind: %v", t2, err)
			}
			must(t, "unpublish", v.unpublish(vol, t1))
			must(t, "multi-writer publish 1", v.publish(vol, tccsi.BusSCSI, staging, t1, capOf(multi), false))
			must(t, "multi-writer publish 2", v.publish(vol, tccsi.BusSCSI, staging, t2, capOf(multi), false))
			must(t, "unpublish 1", v.unpublish(vol, t1))
			must(t, "unpublish 2", v.unpublish(vol, t2))
			must(t, "NodeUnstage", v.unstage(vol, staging))
		})
	}
}
