package hotplug

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestStallHoldsVolumeInPreviousPhase(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 8*mib, true)
	point := FaultPoint(kubevirtv1.HotplugVolumeMounted)
	s.faults.Stall(point)
	hotplug(t, ns, "vm-1", "data", "pvc-data", "held", kubevirtv1.DiskBusVirtio)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.HotplugVolumeAttachedToNode)

	holds(t, ns, "vm-1", "data", kubevirtv1.HotplugVolumeAttachedToNode, 10*phaseDelay)
	if n := len(s.disks.Disks(ns, "vm-1")); n != 0 {
		t.Fatalf("%d disks plugged while stalled", n)
	}
	s.faults.Release(point)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
}

func TestFailureIsReportedThenRetried(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 8*mib, true)
	point := FaultPoint(kubevirtv1.VolumeReady)
	s.faults.FailNext(point, 2)
	log := watchPhases(t, ns, "vm-1", "data")
	hotplug(t, ns, "vm-1", "data", "pvc-data", "flaky", kubevirtv1.DiskBusVirtio)
	st := waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
	if st.Reason != "VolumeReady" {
		t.Fatalf("failure reason not cleared on success: %+v", st)
	}
	if hits := s.faults.Hits(point); hits < 3 {
		t.Fatalf("%s passed %d times, want 2 failures and a success", point, hits)
	}
	// The failures never moved the volume backwards.
	want := []kubevirtv1.VolumePhase{"", kubevirtv1.VolumePending, kubevirtv1.VolumeBound,
		kubevirtv1.HotplugVolumeAttachedToNode, kubevirtv1.HotplugVolumeMounted, kubevirtv1.VolumeReady}
	if got := log.settled(t, kubevirtv1.VolumeReady); !slices.Equal(got, want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
	// The failure was visible in status while it lasted (seen through the watch: it lasts
	// only two phase delays).
	if !log.saw(func(st kubevirtv1.VolumeStatus) bool {
		return st.Phase == kubevirtv1.HotplugVolumeMounted && st.Reason == "FailedHotplugSync" && strings.Contains(st.Message, point)
	}) {
		t.Fatalf("no MountedToPod entry with reason FailedHotplugSync naming %s was written", point)
	}
	// Like virt-handler, each failure is also a Warning event on the VMI.
	err := wait.PollUntilContextTimeout(ctxT(t), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		if err := k8s(t).List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == "FailedHotplugSync" && e.InvolvedObject.Name == "vm-1" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no FailedHotplugSync warning event: %v", err)
	}
}

func TestLatencySlowsAStep(t *testing.T) {
	s := startSim(t)
	ns := namespace(t)
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 8*mib, true)
	const latency = time.Second
	s.faults.SetLatency(FaultPoint(kubevirtv1.VolumeBound), latency)
	start := time.Now()
	hotplug(t, ns, "vm-1", "data", "pvc-data", "slow", kubevirtv1.DiskBusVirtio)
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
	if took := time.Since(start); took < latency+4*phaseDelay {
		t.Fatalf("walk took %s with %s latency on Bound", took, latency)
	}
}

// A DataVolume's claim is attached only once CDI reports the import done.
func TestDataVolumeWaitsForSucceeded(t *testing.T) {
	startSim(t)
	ns := namespace(t)
	ctx := ctxT(t)
	createRunningVMI(t, ns, "vm-1")
	dv := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dv-data"},
		Spec: cdiv1.DataVolumeSpec{
			Source:  &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			Storage: &cdiv1.StorageSpec{},
		},
	}
	if err := k8s(t).Create(ctx, dv); err != nil {
		t.Fatal(err)
	}
	dv.Status.Phase = cdiv1.ImportInProgress
	if err := k8s(t).Status().Update(ctx, dv); err != nil {
		t.Fatal(err)
	}
	pvc := createPVC(t, ns, "dv-data", 8*mib, false)
	pvc.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(dv, cdiv1.SchemeGroupVersion.WithKind("DataVolume"))}
	if err := k8s(t).Update(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	setPVCStatus(t, ns, "dv-data", corev1.ClaimBound, 8*mib)
	mutateVMI(t, ns, "vm-1", func(v *kubevirtv1.VirtualMachineInstance) {
		v.Spec.Volumes = append(v.Spec.Volumes, kubevirtv1.Volume{Name: "data", VolumeSource: kubevirtv1.VolumeSource{
			DataVolume: &kubevirtv1.DataVolumeSource{Name: "dv-data", Hotpluggable: true},
		}})
		v.Spec.Domain.Devices.Disks = append(v.Spec.Domain.Devices.Disks, kubevirtv1.Disk{
			Name: "data", Serial: "dv", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}},
		})
	})
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeBound)
	holds(t, ns, "vm-1", "data", kubevirtv1.VolumeBound, 5*phaseDelay)
	if err := k8s(t).Get(ctx, client.ObjectKeyFromObject(dv), dv); err != nil {
		t.Fatal(err)
	}
	dv.Status.Phase = cdiv1.Succeeded
	if err := k8s(t).Status().Update(ctx, dv); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
}
