package csinode

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// sizes: xfsprogs refuses filesystems below 300 MiB; the files are sparse, so this is cheap.
func backingSize(fsType string) int64 {
	if fsType == "xfs" {
		return 320 << 20
	}
	return 64 << 20
}

// TestFilesystemLifecycle is a pod's life on two VMs: stage (formatting the blank disk),
// publish, write, unpublish, unstage and unplug on one VM, then plug the same disk into
// another VM on the other bus, stage it again (no format: the data must survive) and read the
// file back. Every call is repeated to prove idempotency.
func TestFilesystemLifecycle(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			e := newEnv(t)
			vmA, vmB := e.newVM("vm-a"), e.newVM("vm-b")
			vol := "pvc-life-" + fsType
			file := e.newBacking(vol, backingSize(fsType))
			capability := fsCap(fsType, rwo)

			devA := e.plug(vmA, file, vol, tccsi.BusSCSI)
			staging := vmA.stagingPath(t, vol)
			target := vmA.targetPath(t, "pod-1", vol)
			start := time.Now()
			must(t, "NodeStage (with mkfs)", vmA.stage(vol, tccsi.BusSCSI, staging, capability))
			t.Logf("%s: NodeStage with mkfs took %s", fsType, time.Since(start))
			must(t, "NodeStage again", vmA.stage(vol, tccsi.BusSCSI, staging, capability))
			if got := blkidType(t, devA); got != fsType {
				t.Fatalf("device carries %q after staging, want %s", got, fsType)
			}
			m, ok := mountAt(t, staging)
			if !ok || m.FsType != fsType || m.Source != devA {
				t.Fatalf("staging mount = %+v, %v; want %s on %s", m, ok, fsType, devA)
			}
			if fsType == "xfs" && !slices.Contains(m.SuperOptions, "nouuid") {
				t.Errorf("xfs staged without nouuid: %v", m.SuperOptions)
			}
			must(t, "NodePublish", vmA.publish(vol, tccsi.BusSCSI, staging, target, capability, false))
			must(t, "NodePublish again", vmA.publish(vol, tccsi.BusSCSI, staging, target, capability, false))
			if err := os.WriteFile(filepath.Join(target, "hello.txt"), []byte("hello from vm-a"), 0o644); err != nil {
				t.Fatalf("writing through the published mount: %v", err)
			}

			checkStats(t, vmA, vol, target)

			for i := range 2 {
				must(t, "NodeUnpublish", vmA.unpublish(vol, target))
				if _, err := os.Lstat(target); !os.IsNotExist(err) {
					t.Fatalf("NodeUnpublish #%d left %s: %v", i+1, target, err)
				}
			}
			for range 2 {
				must(t, "NodeUnstage", vmA.unstage(vol, staging))
				if _, mounted := mountAt(t, staging); mounted {
					t.Fatal("staging path still mounted after NodeUnstage")
				}
			}
			if _, err := os.Stat(staging); err != nil {
				t.Errorf("NodeUnstage removed the CO's staging directory: %v", err)
			}
			e.unplug(vmA, vol, devA)

			// The volume follows the pod to vm-b, on the other bus.
			e.plug(vmB, file, vol, tccsi.BusVirtio)
			stagingB := vmB.stagingPath(t, vol)
			targetB := vmB.targetPath(t, "pod-2", vol)
			start = time.Now()
			must(t, "NodeStage on vm-b", vmB.stage(vol, tccsi.BusVirtio, stagingB, capability))
			stageTook := time.Since(start)
			start = time.Now()
			must(t, "NodePublish on vm-b", vmB.publish(vol, tccsi.BusVirtio, stagingB, targetB, capability, false))
			t.Logf("%s: NodeStage without mkfs %s + NodePublish %s", fsType, stageTook, time.Since(start))
			got, err := os.ReadFile(filepath.Join(targetB, "hello.txt"))
			if err != nil || string(got) != "hello from vm-a" {
				t.Fatalf("reading the file back on vm-b: %q, %v", got, err)
			}
			must(t, "NodeUnpublish on vm-b", vmB.unpublish(vol, targetB))
			must(t, "NodeUnstage on vm-b", vmB.unstage(vol, stagingB))
		})
	}
}

func checkStats(t *testing.T, v *vm, vol, path string) {
	t.Helper()
	rsp, err := v.node.NodeGetVolumeStats(ctx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: path})
	must(t, "NodeGetVolumeStats", err)
	units := map[csi.VolumeUsage_Unit]*csi.VolumeUsage{}
	for _, u := range rsp.GetUsage() {
		units[u.GetUnit()] = u
	}
	b, i := units[csi.VolumeUsage_BYTES], units[csi.VolumeUsage_INODES]
	if b == nil || i == nil {
		t.Fatalf("stats lack bytes or inodes: %v", rsp)
	}
	if b.GetTotal() <= 0 || b.GetUsed() <= 0 || b.GetAvailable() <= 0 || b.GetUsed()+b.GetAvailable() > b.GetTotal() {
		t.Errorf("implausible byte usage: %v", b)
	}
	if i.GetTotal() <= 0 || i.GetUsed() <= 0 || i.GetUsed()+i.GetAvailable() != i.GetTotal() {
		t.Errorf("implausible inode usage: %v", i)
	}
	if df := dfSize(t, path); df != b.GetTotal() {
		t.Errorf("stats total %d bytes, df says %d", b.GetTotal(), df)
	}
}

// TestReadOnlyPublish: a read-only publish refuses writes with EROFS while a read-write
// publish of the same staged volume keeps working, and a publish that changes the read-only
// flag of an existing target is ALREADY_EXISTS.
func TestReadOnlyPublish(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	const vol = "pvc-ro"
	e.plug(v, e.newBacking(vol, 64<<20), vol, tccsi.BusSCSI)
	capability := fsCap("ext4", rwo)
	staging := v.stagingPath(t, vol)
	must(t, "NodeStage", v.stage(vol, tccsi.BusSCSI, staging, capability))
	ro, rw := v.targetPath(t, "pod-ro", vol), v.targetPath(t, "pod-rw", vol)
	must(t, "read-only NodePublish", v.publish(vol, tccsi.BusSCSI, staging, ro, capability, true))
	must(t, "read-only NodePublish again", v.publish(vol, tccsi.BusSCSI, staging, ro, capability, true))
	must(t, "read-write NodePublish", v.publish(vol, tccsi.BusSCSI, staging, rw, capability, false))

	if err := os.WriteFile(filepath.Join(ro, "x"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write through the read-only publish: %v, want EROFS", err)
	}
	if err := os.WriteFile(filepath.Join(rw, "x"), []byte("x"), 0o644); err != nil {
		t.Errorf("write through the read-write publish: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ro, "x")); err != nil {
		t.Errorf("the read-only publish does not show the same filesystem: %v", err)
	}
	err := v.publish(vol, tccsi.BusSCSI, staging, ro, capability, false)
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("re-publish with another read-only flag: %v, want AlreadyExists", err)
	}
	for _, target := range []string{ro, rw} {
		must(t, "NodeUnpublish", v.unpublish(vol, target))
	}
	must(t, "NodeUnstage", v.unstage(vol, staging))
}

// TestStageMountFlags: the capability's mount flags reach the staging mount.
func TestStageMountFlags(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	const vol = "pvc-flags"
	e.plug(v, e.newBacking(vol, 64<<20), vol, tccsi.BusVirtio)
	staging := v.stagingPath(t, vol)
	must(t, "NodeStage", v.stage(vol, tccsi.BusVirtio, staging, fsCap("ext4", rwo, "noatime", "nodev")))
	m, ok := mountAt(t, staging)
	if !ok || !slices.Contains(m.MountOptions, "noatime") || !slices.Contains(m.MountOptions, "nodev") {
		t.Errorf("staging mount options %v lack noatime,nodev", m.MountOptions)
	}
	must(t, "NodeUnstage", v.unstage(vol, staging))
}

// TestRefuseForeignFilesystem: a disk that already carries xfs is neither formatted nor
// mounted when the volume asks for ext4.
func TestRefuseForeignFilesystem(t *testing.T) {
	e := newEnv(t)
	v := e.newVM("vm-a")
	const vol = "pvc-foreign"
	dev := e.plug(v, e.newBacking(vol, backingSize("xfs")), vol, tccsi.BusSCSI)
	if out, err := run("mkfs.xfs", "-q", dev); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	staging := v.stagingPath(t, vol)
	err := v.stage(vol, tccsi.BusSCSI, staging, fsCap("ext4", rwo))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "already carries xfs") ||
		!strings.Contains(err.Error(), tccsi.Serial(vol)) {
		t.Fatalf("staging an xfs disk as ext4: %v, want FailedPrecondition naming xfs and the serial", err)
	}
	if got := blkidType(t, dev); got != "xfs" {
		t.Fatalf("the disk now carries %q: it was reformatted", got)
	}
	if _, mounted := mountAt(t, staging); mounted {
		t.Fatal("the refused disk was mounted")
	}
	must(t, "staging it as what it is", v.stage(vol, tccsi.BusSCSI, staging, fsCap("xfs", rwo)))
	err = v.stage(vol, tccsi.BusSCSI, staging, fsCap("ext4", rwo))
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("re-stage with another fs_type: %v, want AlreadyExists", err)
	}
	must(t, "NodeUnstage", v.unstage(vol, staging))
}
