package hotplug

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/test/sim/disks"
)

// deviceOf resolves the by-id link the guest would see to its loop device.
func deviceOf(t *testing.T, s *sim, ns, vm, link string) string {
	t.Helper()
	dev, err := filepath.EvalSymlinks(filepath.Join(s.disks.DeviceDir(ns, vm), link))
	if err != nil {
		t.Fatalf("guest link %s: %v", link, err)
	}
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("link %s resolves to %s, not a loop device", link, dev)
	}
	return dev
}

func TestWalkToReadyPlugsVirtioDisk(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 64*mib, true)
	log := watchPhases(t, ns, "vm-1", "data")

	serial := "tc-0123456789abcdefghijkl" // longer than virtio's 20 bytes
	hotplug(t, ns, "vm-1", "data", "pvc-data", serial, kubevirtv1.DiskBusVirtio)
	st := waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)

	want := []kubevirtv1.VolumePhase{"", kubevirtv1.VolumePending, kubevirtv1.VolumeBound,
		kubevirtv1.HotplugVolumeAttachedToNode, kubevirtv1.HotplugVolumeMounted, kubevirtv1.VolumeReady}
	if got := log.settled(t, kubevirtv1.VolumeReady); !slices.Equal(got, want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
	if st.Target != "vdb" || st.Reason != "VolumeReady" || st.HotplugVolume == nil || !strings.HasPrefix(st.HotplugVolume.AttachPodName, "hp-volume-") {
		t.Fatalf("Ready entry = %+v", st)
	}
	info := st.PersistentVolumeClaimInfo
	if info == nil || info.ClaimName != "pvc-data" || info.VolumeMode == nil || *info.VolumeMode != corev1.PersistentVolumeBlock {
		t.Fatalf("persistentVolumeClaimInfo = %+v", info)
	}
	if c := info.Capacity[corev1.ResourceStorage]; c.Value() != 64*mib {
		t.Fatalf("capacity in status %s", c.String())
	}

	dev := deviceOf(t, s, ns, "vm-1", "virtio-"+serial[:20])
	if size, err := disks.DeviceSize(dev); err != nil || size != 64*mib {
		t.Fatalf("device %s size %d (%v), want %d", dev, size, err, 64*mib)
	}

	// Everything the controller does not own survived its writes.
	vmi := getVMI(t, ns, "vm-1")
	root := volumeStatus(vmi, "rootdisk")
	if vmi.Status.NodeName != "infra-node-1" || len(vmi.Status.Interfaces) != 1 || root == nil || root.Target != "vda" || root.HotplugVolume != nil {
		t.Fatalf("other status fields clobbered: node %q interfaces %v root %+v", vmi.Status.NodeName, vmi.Status.Interfaces, root)
	}
}

func TestUnplugDetachesAndDataSurvivesReplug(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 32*mib, true)
	hotplug(t, ns, "vm-1", "data", "pvc-data", "data-0001", kubevirtv1.DiskBusSCSI)
	if st := waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady); st.Target != "sda" {
		t.Fatalf("scsi target %q, want sda", st.Target)
	}
	link := "scsi-0QEMU_QEMU_HARDDISK_data-0001"
	dev := deviceOf(t, s, ns, "vm-1", link)
	payload := []byte("written by the guest before unplug")
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, 3*mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	backing := loopBackingFile(t, dev)

	log := watchPhases(t, ns, "vm-1", "data")
	unplug(t, ns, "vm-1", "data")
	waitGone(t, ns, "vm-1", "data")
	want := []kubevirtv1.VolumePhase{kubevirtv1.VolumeReady, kubevirtv1.HotplugVolumeUnMounted, kubevirtv1.HotplugVolumeDetaching, ""}
	if got := log.settled(t, ""); !slices.Equal(got, want) {
		t.Fatalf("unplug phases %v, want %v", got, want)
	}
	if _, err := os.Lstat(filepath.Join(s.disks.DeviceDir(ns, "vm-1"), link)); !os.IsNotExist(err) {
		t.Fatalf("guest link still present: %v", err)
	}
	if got := loopBackingFile(t, dev); got == backing {
		t.Fatalf("%s still attached to %s", dev, backing)
	}

	hotplug(t, ns, "vm-1", "data", "pvc-data", "data-0001", kubevirtv1.DiskBusSCSI)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
	dev = deviceOf(t, s, ns, "vm-1", link)
	got := make([]byte, len(payload))
	f, err = os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 3*mib); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("after replug read %q, want %q", got, payload)
	}
}

func TestPVCResizeGrowsGuestDevice(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 16*mib, true)
	hotplug(t, ns, "vm-1", "data", "pvc-data", "grow-me", kubevirtv1.DiskBusVirtio)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
	dev := deviceOf(t, s, ns, "vm-1", "virtio-grow-me")

	// The resizer finished: status.capacity grows.
	setPVCStatus(t, ns, "pvc-data", corev1.ClaimBound, 48*mib)
	waitFor(t, ns, "vm-1", "data", "capacity 48Mi in status", func(st *kubevirtv1.VolumeStatus) bool {
		if st == nil || st.PersistentVolumeClaimInfo == nil {
			return false
		}
		c := st.PersistentVolumeClaimInfo.Capacity[corev1.ResourceStorage]
		return c.Value() == 48*mib
	})
	pollDeviceSize(t, dev, 48*mib)
}

func TestPendingUntilClaimExistsAndBinds(t *testing.T) {
	startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	hotplug(t, ns, "vm-1", "data", "pvc-late", "late", kubevirtv1.DiskBusVirtio)
	waitFor(t, ns, "vm-1", "data", "pending on a missing PVC", func(st *kubevirtv1.VolumeStatus) bool {
		return st != nil && st.Phase == kubevirtv1.VolumePending && st.Reason == "FailedPvcNotFound" && st.Message == "PVC pvc-late not found"
	})
	createPVC(t, ns, "pvc-late", 8*mib, false)
	waitFor(t, ns, "vm-1", "data", "pending on an unbound PVC", func(st *kubevirtv1.VolumeStatus) bool {
		return st != nil && st.Phase == kubevirtv1.VolumePending && st.Reason == "PVCNotReady" && st.Message == "PVC is in phase ClaimPending"
	})
	setPVCStatus(t, ns, "pvc-late", corev1.ClaimBound, 8*mib)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
}

func TestStoppedVMIReleasesDisks(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 8*mib, true)
	hotplug(t, ns, "vm-1", "data", "pvc-data", "stop-me", kubevirtv1.DiskBusVirtio)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
	dev := deviceOf(t, s, ns, "vm-1", "virtio-stop-me")
	backing := loopBackingFile(t, dev)

	mutateVMI(t, ns, "vm-1", func(v *kubevirtv1.VirtualMachineInstance) { v.Status.Phase = kubevirtv1.Succeeded })
	pollNoDisks(t, s, ns, "vm-1")
	if got := loopBackingFile(t, dev); got == backing {
		t.Fatalf("%s still attached after the VMI stopped", dev)
	}
}

func TestDeletedClaimDropsItsData(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	ctx := ctxT(t)
	createRunningVMI(t, ns, "vm-1")
	pvc := createPVC(t, ns, "pvc-data", 8*mib, true)
	hotplug(t, ns, "vm-1", "data", "pvc-data", "doomed", kubevirtv1.DiskBusVirtio)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
	file := s.disks.BackingFile(ns, "pvc-data")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("backing file of a plugged claim: %v", err)
	}
	unplug(t, ns, "vm-1", "data")
	waitGone(t, ns, "vm-1", "data")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("unplug removed the data: %v", err)
	}

	if err := k8s(t).Delete(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	// No kube-controller-manager runs to lift kubernetes.io/pvc-protection; do its part.
	mutatePVC(t, ns, "pvc-data", func(p *corev1.PersistentVolumeClaim) { p.Finalizers = nil })
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(file)
		return os.IsNotExist(err), nil
	})
	if err != nil {
		t.Fatalf("backing file %s still there after the PVC was deleted", file)
	}
}
