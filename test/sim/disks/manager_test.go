package disks

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

const mib = 1 << 20

// newManager returns a Manager under a fresh directory, skipping the test where loop devices
// cannot be used, and closes it however the test ends.
func newManager(t *testing.T) *Manager {
	t.Helper()
	harness.Require(t, harness.NeedDisks, Supported())
	m, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// loopBackingFile is what the kernel says dev is attached to, or "" if dev is free.
func loopBackingFile(t *testing.T, dev string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

func blockdevSize(t *testing.T, dev string) int64 {
	t.Helper()
	out, err := exec.Command("blockdev", "--getsize64", dev).Output()
	if err != nil {
		t.Fatalf("blockdev --getsize64 %s: %v", dev, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeAt(t *testing.T, dev string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, dev string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	return buf
}

func TestPlugVirtioLinksTruncatedSerialToLoopDeviceOfClaimSize(t *testing.T) {
	m := newManager(t)
	serial := "0123456789abcdefghijKLMNOP" // 26 bytes: the guest sees the first 20
	dev, err := m.Plug(ctxT(t), "tenant-a", "vm-1", "pvc-a", 64*mib, serial, BusVirtio)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(m.DeviceDir("tenant-a", "vm-1"), "virtio-0123456789abcdefghij")
	target, err := filepath.EvalSymlinks(link)
	if err != nil {
		t.Fatalf("link %s: %v", link, err)
	}
	if target != dev || !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("link resolves to %s, Plug returned %s", target, dev)
	}
	if got := blockdevSize(t, dev); got != 64*mib {
		t.Fatalf("device size %d, want %d", got, 64*mib)
	}
	if got, err := DeviceSize(dev); err != nil || got != 64*mib {
		t.Fatalf("sysfs size %d (%v), want %d", got, err, 64*mib)
	}
	if got := loopBackingFile(t, dev); got != m.BackingFile("tenant-a", "pvc-a") {
		t.Fatalf("loop device backed by %q", got)
	}
	// Plugging again is a no-op returning the same device, so reconcilers can retry.
	again, err := m.Plug(ctxT(t), "tenant-a", "vm-1", "pvc-a", 64*mib, serial, BusVirtio)
	if err != nil || again != dev {
		t.Fatalf("second Plug = %s, %v; want %s", again, err, dev)
	}
	if d := m.Disks("tenant-a", "vm-1"); len(d) != 1 || d[0].Serial != "0123456789abcdefghij" {
		t.Fatalf("Disks = %+v", d)
	}
}

func TestPlugSCSINamesLinkLikeQEMUHarddisk(t *testing.T) {
	m := newManager(t)
	dev, err := m.Plug(ctxT(t), "tenant-a", "vm-1", "pvc-b", 8*mib, "data-disk-0001", BusSCSI)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(m.DeviceDir("tenant-a", "vm-1"), "scsi-0QEMU_QEMU_HARDDISK_data-disk-0001")
	if target, err := filepath.EvalSymlinks(link); err != nil || target != dev {
		t.Fatalf("link %s -> %s (%v), want %s", link, target, err, dev)
	}
	if _, err := m.Plug(ctxT(t), "tenant-a", "vm-1", "pvc-c", 8*mib, "x", "sata"); err == nil {
		t.Fatal("sata disk was plugged")
	}
}

func TestDevicesAreSeparatePerVM(t *testing.T) {
	m := newManager(t)
	if _, err := m.Plug(ctxT(t), "tenant-a", "vm-1", "pvc-a", 8*mib, "disk-a", BusVirtio); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Plug(ctxT(t), "tenant-a", "vm-2", "pvc-b", 8*mib, "disk-b", BusVirtio); err != nil {
		t.Fatal(err)
	}
	for vm, want := range map[string]string{"vm-1": "virtio-disk-a", "vm-2": "virtio-disk-b"} {
		entries, err := os.ReadDir(m.DeviceDir("tenant-a", vm))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != want {
			t.Fatalf("%s sees %v, want only %s", vm, entries, want)
		}
	}
}

func TestDuplicateSerialInOneVMIsRefused(t *testing.T) {
	m := newManager(t)
	if _, err := m.Plug(ctxT(t), "ns", "vm", "pvc-a", 8*mib, "same", BusVirtio); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Plug(ctxT(t), "ns", "vm", "pvc-b", 8*mib, "same", BusVirtio); err == nil {
		t.Fatal("second disk with the same serial was plugged")
	}
	if n := len(m.Disks("ns", "vm")); n != 1 {
		t.Fatalf("%d disks plugged, want 1", n)
	}
}

func TestDataSurvivesUnplugAndReplug(t *testing.T) {
	m := newManager(t)
	ctx := ctxT(t)
	dev, err := m.Plug(ctx, "ns", "vm-1", "pvc-a", 16*mib, "keep", BusVirtio)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("tenantcloud survives detach")
	writeAt(t, dev, payload, 5*mib)
	if err := m.Unplug("ns", "vm-1", "pvc-a"); err != nil {
		t.Fatal(err)
	}
	if got := loopBackingFile(t, dev); got == m.BackingFile("ns", "pvc-a") {
		t.Fatalf("%s still attached to the claim after Unplug", dev)
	}
	if _, err := os.Lstat(filepath.Join(m.DeviceDir("ns", "vm-1"), "virtio-keep")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link still present after Unplug: %v", err)
	}
	if err := m.Unplug("ns", "vm-1", "pvc-a"); err != nil {
		t.Fatalf("second Unplug: %v", err)
	}
	// Replug into another VM, as after a detach from one node and attach to the next.
	dev2, err := m.Plug(ctx, "ns", "vm-2", "pvc-a", 16*mib, "keep", BusSCSI)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAt(t, dev2, len(payload), 5*mib); !bytes.Equal(got, payload) {
		t.Fatalf("read back %q, want %q", got, payload)
	}
	// Deleting the claim drops the data for good.
	if err := m.Delete("ns", "pvc-a"); err != nil {
		t.Fatal(err)
	}
	if len(m.Disks("ns", "vm-2")) != 0 {
		t.Fatal("Delete left the claim plugged")
	}
	dev3, err := m.Plug(ctx, "ns", "vm-2", "pvc-a", 16*mib, "keep", BusSCSI)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAt(t, dev3, len(payload), 5*mib); !bytes.Equal(got, make([]byte, len(payload))) {
		t.Fatalf("deleted claim still holds %q", got)
	}
}

func TestResizeGrowsPluggedDevice(t *testing.T) {
	m := newManager(t)
	ctx := ctxT(t)
	dev, err := m.Plug(ctx, "ns", "vm-1", "pvc-a", 8*mib, "grow", BusVirtio)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Resize("ns", "pvc-a", 24*mib); err != nil {
		t.Fatal(err)
	}
	if got := blockdevSize(t, dev); got != 24*mib {
		t.Fatalf("size after resize %d, want %d", got, 24*mib)
	}
	if err := m.Resize("ns", "pvc-a", 4*mib); err != nil {
		t.Fatal(err)
	}
	if got := blockdevSize(t, dev); got != 24*mib {
		t.Fatalf("resize shrank the device to %d", got)
	}
	// A claim never plugged has no file yet: nothing to do, the next Plug uses the new size.
	if err := m.Resize("ns", "never-plugged", 24*mib); err != nil {
		t.Fatal(err)
	}
	// Plugging with a larger size (PVC grew while detached) grows the file too.
	if err := m.Unplug("ns", "vm-1", "pvc-a"); err != nil {
		t.Fatal(err)
	}
	dev, err = m.Plug(ctx, "ns", "vm-1", "pvc-a", 32*mib, "grow", BusVirtio)
	if err != nil {
		t.Fatal(err)
	}
	if got := blockdevSize(t, dev); got != 32*mib {
		t.Fatalf("size after replug at 32Mi: %d", got)
	}
}

func TestCloseReleasesEveryLoopDevice(t *testing.T) {
	harness.Require(t, harness.NeedDisks, Supported())
	root := t.TempDir()
	m, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx := ctxT(t)
	for i, vm := range []string{"vm-1", "vm-1", "vm-2"} {
		claim := "pvc-" + strconv.Itoa(i)
		if _, err := m.Plug(ctx, "ns", vm, claim, 4*mib, claim, BusVirtio); err != nil {
			t.Fatal(err)
		}
	}
	// A device attached behind the Manager's back to one of its files (as a Plug interrupted
	// between losetup and bookkeeping would leave) must go too.
	stray, err := attach(ctx, m.BackingFile("ns", "pvc-0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-a").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), root) {
		t.Fatalf("losetup -a still lists files under %s:\n%s", root, out)
	}
	if got := loopBackingFile(t, stray); strings.HasPrefix(got, root) {
		t.Fatalf("stray device %s still attached to %s", stray, got)
	}
	if _, err := os.Stat(filepath.Join(root, backingDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backing files not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "ns")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("device directories not removed: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Plug(ctx, "ns", "vm-1", "late", 4*mib, "late", BusVirtio); !errors.Is(err, ErrClosed) {
		t.Fatalf("Plug after Close: %v, want ErrClosed", err)
	}
}

func TestReapOrphansReleasesDevicesOfDeadOwner(t *testing.T) {
	harness.Require(t, harness.NeedDisks, Supported())
	// Lay out what a killed test leaves: a root whose owner is dead and a device on its file.
	root := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ownerFileName), []byte(strconv.Itoa(dead.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, backingDirName, "ns", "orphan.img")
	if err := growFile(file, 4*mib); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	dev, err := attach(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if loopBackingFile(t, dev) == file {
			_ = detach(context.Background(), dev)
		}
	})
	// A live Manager's device in the same scan must survive.
	m := newManager(t)
	live, err := m.Plug(ctx, "ns", "vm", "live", 4*mib, "live", BusVirtio)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReapOrphans(ctx); err != nil {
		t.Fatal(err)
	}
	if got := loopBackingFile(t, dev); got == file {
		t.Fatalf("orphan %s still attached", dev)
	}
	if got := loopBackingFile(t, live); got != m.BackingFile("ns", "live") {
		t.Fatalf("live device %s was reaped (backing %q)", live, got)
	}
}

// Copy is a snapshot's or clone's data: the source's bytes, sparse; a retried copy keeps what
// the copy holds by then, and a never-written source gives no file (an empty disk).
func TestCopyIsSparseAndKeepsAnExistingCopy(t *testing.T) {
	m := newManager(t)
	ctx := ctxT(t)
	src := m.BackingFile("ns", "origin")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("origin-bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 64*mib); err != nil {
		t.Fatal(err)
	}
	snap := m.SnapshotFile("ns", "snap")
	if err := m.Copy(ctx, src, snap); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("changed-late"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Copy(ctx, src, snap); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(snap)
	if err != nil || len(got) != 64*mib || string(got[:12]) != "origin-bytes" {
		t.Fatalf("snapshot holds %d bytes starting %q (%v), want 64 MiB starting \"origin-bytes\"", len(got), got[:min(12, len(got))], err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(snap, &st); err != nil || st.Blocks*512 >= mib {
		t.Errorf("snapshot allocates %d bytes (%v), want it sparse", st.Blocks*512, err)
	}
	empty := m.BackingFile("ns", "from-nothing")
	if err := m.Copy(ctx, m.BackingFile("ns", "never-written"), empty); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(empty); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy of a never-written disk: stat %v, want no file", err)
	}
	if err := m.DeleteSnapshot("ns", "snap"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snap); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted snapshot: stat %v, want no file", err)
	}
}
