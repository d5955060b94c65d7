package csinode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	mount "k8s.io/mount-utils"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/node"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// suiteRoot holds every file, mount point and loop backing file of this package's tests, so
// that TestMain can prove nothing under it is left mounted or attached.
var suiteRoot string

// unsupported says why real-device tests cannot run here; nil if they can.
var unsupported error

func TestMain(m *testing.M) {
	unsupported = checkSupport()
	var err error
	suiteRoot, err = os.MkdirTemp("", "csinode-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if leaks := leftovers(suiteRoot); len(leaks) > 0 {
		// Do not remove the directory: RemoveAll would descend into a leaked mount.
		fmt.Fprintf(os.Stderr, "csinode e2e left these behind:\n  %s\n", strings.Join(leaks, "\n  "))
		os.Exit(1)
	}
	_ = os.RemoveAll(suiteRoot)
	os.Exit(code)
}

func checkSupport() error {
	if os.Geteuid() != 0 {
		return errors.New("root for loop devices, mkfs and mount")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("loop devices: %w", err)
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mkfs.xfs", "blkid", "resize2fs", "xfs_growfs", "mount", "umount", "df"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s (hack/testdeps.sh installs it): %w", tool, err)
		}
	}
	return nil
}

// leftovers lists mounts and loop devices under root.
func leftovers(root string) []string {
	var out []string
	for _, m := range mountsUnder(root) {
		out = append(out, "mount "+m)
	}
	loops, err := loopsUnder(root)
	if err != nil {
		out = append(out, "cannot list loop devices: "+err.Error())
	}
	for _, l := range loops {
		out = append(out, "loop device "+l)
	}
	return out
}

func mountsUnder(root string) []string {
	infos, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return []string{"cannot read mountinfo: " + err.Error()}
	}
	var out []string
	for _, m := range infos {
		if strings.HasPrefix(m.MountPoint, root+"/") {
			out = append(out, m.MountPoint)
		}
	}
	return out
}

// loopsUnder returns the loop devices whose backing file is under root.
func loopsUnder(root string) ([]string, error) {
	raw, err := exec.Command("losetup", "--list", "--json", "--output", "NAME,BACK-FILE").Output()
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return nil, nil
	}
	var doc struct {
		Loopdevices []struct {
			Name     string `json:"name"`
			BackFile string `json:"back-file"`
		} `json:"loopdevices"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	var out []string
	for _, l := range doc.Loopdevices {
		if strings.HasPrefix(l.BackFile, root+"/") {
			out = append(out, l.Name)
		}
	}
	return out, nil
}

// env is one test's world: backing files ("PVCs") and any number of VMs.
type env struct {
	t    testing.TB
	root string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	harness.Require(t, harness.NeedDisks, unsupported)
	root, err := os.MkdirTemp(suiteRoot, strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: root}
	// Registered before any VM or disk, so it runs after their cleanups: unmount everything
	// first, then detach, then remove the files. Runs on failure too.
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) cleanup() {
	t := e.t
	for range 5 {
		mps := mountsUnder(e.root)
		if len(mps) == 0 {
			break
		}
		slices.Reverse(mps) // newest (innermost, topmost) first
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				t.Logf("cleanup: unmount %s: %v; detaching lazily", mp, err)
				_ = unix.Unmount(mp, unix.MNT_DETACH)
			}
		}
	}
	if mps := mountsUnder(e.root); len(mps) > 0 {
		t.Errorf("cleanup: still mounted: %q", mps)
		return // removing the files would descend into the mounts
	}
	loops, err := loopsUnder(e.root)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, l := range loops {
		if out, err := exec.Command("losetup", "--detach", l).CombinedOutput(); err != nil {
			t.Errorf("cleanup: losetup --detach %s: %v: %s", l, err, out)
		}
	}
	if err := os.RemoveAll(e.root); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// vm is one simulated guest: its own by-id directory, kubelet directory and csi-node.
type vm struct {
	name       string
	deviceDir  string
	kubeletDir string
	node       csi.NodeClient
}

const deviceWait = 2 * time.Second

func (e *env) newVM(name string) *vm {
	e.t.Helper()
	v := &vm{
		name:       name,
		deviceDir:  filepath.Join(e.root, name, "dev", "disk", "by-id"),
		kubeletDir: filepath.Join(e.root, name, "var", "lib", "kubelet"),
	}
	for _, d := range []string{v.deviceDir, v.kubeletDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	s, err := node.New(node.Options{
		NodeID:            name,
		DeviceDir:         v.deviceDir,
		KubeletDir:        v.kubeletDir,
		DeviceWaitTimeout: deviceWait,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	sock := filepath.Join(e.root, name, "csi.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterNodeServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	e.t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = conn.Close() })
	v.node = csi.NewNodeClient(conn)
	return v
}

// newBacking creates the sparse file behind a volume, like the PVC behind a DataVolume.
func (e *env) newBacking(name string, size int64) string {
	e.t.Helper()
	p := filepath.Join(e.root, "pvc", name+".img")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// linkName is the by-id name a Linux guest gives a QEMU disk; the simulator uses the same
// rules (test/sim/disks).
func linkName(serial, bus string) string {
	if bus == tccsi.BusVirtio {
		return "virtio-" + serial[:min(len(serial), tccsi.MaxSerialLen)]
	}
	return "scsi-0QEMU_QEMU_HARDDISK_" + serial
}

// plug hot-plugs backing file into v as the disk of volumeID: a loop device plus the by-id
// link. It returns the device path.
func (e *env) plug(v *vm, file, volumeID, bus string) string {
	e.t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		e.t.Fatalf("losetup --find --show %s: %v: %s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	link := filepath.Join(v.deviceDir, linkName(tccsi.Serial(volumeID), bus))
	if err := os.Symlink(dev, link); err != nil {
		e.t.Fatal(err)
	}
	return dev
}

// unplug removes the disk of volumeID from v the way a hot-unplug looks from inside: the link
// goes, and the device is released (the loop driver defers that while it is still mounted).
func (e *env) unplug(v *vm, volumeID, dev string) {
	e.t.Helper()
	for _, bus := range []string{tccsi.BusSCSI, tccsi.BusVirtio} {
		_ = os.Remove(filepath.Join(v.deviceDir, linkName(tccsi.Serial(volumeID), bus)))
	}
	if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
		e.t.Fatalf("losetup --detach %s: %v: %s", dev, err, out)
	}
}

// stagingPath is where kubelet would stage volumeID; kubelet creates the directory.
func (v *vm) stagingPath(t testing.TB, volumeID string) string {
	t.Helper()
	p := filepath.Join(v.kubeletDir, "plugins", "kubernetes.io", "csi", tccsi.DriverName, tccsi.Serial(volumeID), "globalmount")
	if err := os.MkdirAll(p, 0o750); err != nil {
		t.Fatal(err)
	}
	return p
}

// targetPath is a pod's mount target; kubelet creates only the parent.
func (v *vm) targetPath(t testing.TB, pod, volumeID string) string {
	t.Helper()
	p := filepath.Join(v.kubeletDir, "pods", pod, "volumes", "kubernetes.io~csi", volumeID, "mount")
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	return p
}

// blockTarget is a pod's block device target file; kubelet creates only the parent.
func (v *vm) blockTarget(t testing.TB, pod, volumeID string) string {
	t.Helper()
	p := filepath.Join(v.kubeletDir, "plugins", "kubernetes.io", "csi", "volumeDevices", "publish", volumeID, pod)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	return p
}

func fsCap(fsType string, mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	}
}

const rwo = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER

func publishContext(volumeID, bus string) map[string]string {
	return map[string]string{tccsi.PublishContextSerial: tccsi.Serial(volumeID), tccsi.PublishContextBus: bus}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// callCtx bounds one call; the helpers below take no testing.TB context so that benchmark
// loops do not pile up cleanups.
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

func (v *vm) stage(volumeID, bus, staging string, c *csi.VolumeCapability) error {
	cc, cancel := callCtx()
	defer cancel()
	_, err := v.node.NodeStageVolume(cc, &csi.NodeStageVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: staging, VolumeCapability: c,
		PublishContext: publishContext(volumeID, bus),
	})
	return err
}

func (v *vm) unstage(volumeID, staging string) error {
	cc, cancel := callCtx()
	defer cancel()
	_, err := v.node.NodeUnstageVolume(cc, &csi.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: staging})
	return err
}

func (v *vm) publish(volumeID, bus, staging, target string, c *csi.VolumeCapability, readOnly bool) error {
	cc, cancel := callCtx()
	defer cancel()
	_, err := v.node.NodePublishVolume(cc, &csi.NodePublishVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: staging, TargetPath: target, VolumeCapability: c,
		Readonly: readOnly, PublishContext: publishContext(volumeID, bus),
	})
	return err
}

func (v *vm) unpublish(volumeID, target string) error {
	cc, cancel := callCtx()
	defer cancel()
	_, err := v.node.NodeUnpublishVolume(cc, &csi.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: target})
	return err
}

// must fails the test on err, naming what was being done.
func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// mountAt returns the topmost mount at path.
func mountAt(t testing.TB, path string) (mount.MountInfo, bool) {
	t.Helper()
	infos, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found mount.MountInfo
	ok := false
	for _, m := range infos {
		if m.MountPoint == path {
			found, ok = m, true
		}
	}
	return found, ok
}

func blkidType(t testing.TB, dev string) string {
	t.Helper()
	out, _ := exec.Command("blkid", "-p", "-s", "TYPE", "-o", "value", dev).Output()
	return strings.TrimSpace(string(out))
}

// dfSize is the filesystem size df reports for path, in bytes.
func dfSize(t testing.TB, path string) int64 {
	t.Helper()
	out, err := exec.Command("df", "-B1", "--output=size", path).CombinedOutput()
	if err != nil {
		t.Fatalf("df %s: %v: %s", path, err, out)
	}
	lines := strings.Fields(string(out))
	var n int64
	if _, err := fmt.Sscan(lines[len(lines)-1], &n); err != nil {
		t.Fatalf("parsing df output %q: %v", out, err)
	}
	return n
}

// eventually polls cond until it holds or the bound passes; for kernel state that settles
// asynchronously (loop autoclear), never as a stand-in for synchronisation.
func eventually(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s", what, bound)
		}
		tick := time.NewTimer(20 * time.Millisecond)
		<-tick.C
	}
}

// run runs a command and returns its combined output.
func run(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
