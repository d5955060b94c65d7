package kubevirt

import (
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

func resourceMust(s string) resource.Quantity { return resource.MustParse(s) }

// kubevirtPodLabels are the labels virt-controller adds to a launcher pod on top of the VMI's.
var kubevirtPodLabels = []string{kubevirtv1.AppLabel, kubevirtv1.CreatedByLabel,
	kubevirtv1.DeprecatedVirtualMachineNameLabel, kubevirtv1.VirtualMachineInstanceIDLabel}

func TestVMStartsVMIThroughPhases(t *testing.T) {
	s := startSim(t, Options{})
	phases := s.recordPhases()
	vm := s.newVM("vm-a", kubevirtv1.RunStrategyAlways)
	s.create(vm)

	vmi := s.waitVMIPhase("vm-a", kubevirtv1.Running)
	want := []kubevirtv1.VirtualMachineInstancePhase{kubevirtv1.Pending, kubevirtv1.Scheduling, kubevirtv1.Scheduled, kubevirtv1.Running}
	s.eventually("all phases recorded", func() (bool, error) { return len(phases.of("vm-a")) >= len(want), nil })
	if got := phases.of("vm-a"); !slices.Equal(got, want) {
		t.Errorf("phases = %v, want %v", got, want)
	}

	// Identity, ownership, metadata copied from the template.
	if ref := metav1.GetControllerOf(vmi); ref == nil || ref.UID != s.vmUID("vm-a") || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Errorf("VMI controller reference = %+v, want the VM with blockOwnerDeletion", ref)
	}
	for k, v := range vm.Spec.Template.ObjectMeta.Labels {
		if vmi.Labels[k] != v {
			t.Errorf("VMI label %s = %q, want %q", k, vmi.Labels[k], v)
		}
	}
	if vmi.Annotations["example.com/note"] != "from-template" {
		t.Errorf("VMI annotations %v lack the template's", vmi.Annotations)
	}
	if vmi.Spec.Domain.CPU == nil || vmi.Spec.Domain.CPU.Cores != 2 {
		t.Errorf("VMI domain CPU = %+v, want 2 cores from the template", vmi.Spec.Domain.CPU)
	}

	// Placement on an infra node with topology labels.
	node := &corev1.Node{}
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: vmi.Status.NodeName}, node); err != nil {
		t.Fatalf("VMI nodeName %q: %v", vmi.Status.NodeName, err)
	}
	if node.Labels[corev1.LabelTopologyZone] == "" || node.Labels[corev1.LabelTopologyRegion] != "region-1" {
		t.Errorf("node %s labels %v lack zone/region", node.Name, node.Labels)
	}
	if vmi.Labels[kubevirtv1.NodeNameLabel] != node.Name {
		t.Errorf("VMI label %s = %q, want %s", kubevirtv1.NodeNameLabel, vmi.Labels[kubevirtv1.NodeNameLabel], node.Name)
	}
	for _, taint := range node.Spec.Taints {
		if taint.Key == corev1.TaintNodeNotReady {
			t.Errorf("infra node %s still has the not-ready taint", node.Name)
		}
	}

	// Interfaces: the pod network with one IPv4 and one IPv6 address.
	if len(vmi.Status.Interfaces) != 1 {
		t.Fatalf("interfaces = %+v, want one", vmi.Status.Interfaces)
	}
	iface := vmi.Status.Interfaces[0]
	if iface.Name != "default" || iface.InterfaceName != "eth0" || iface.InfoSource == "" || len(iface.IPs) != 2 || iface.IP != iface.IPs[0] {
		t.Errorf("interface = %+v", iface)
	}
	v4, v6 := mustAddr(t, iface.IPs[0]), mustAddr(t, iface.IPs[1])
	if !netip.MustParsePrefix("10.244.0.0/16").Contains(v4) || !netip.MustParsePrefix("fd10:244::/64").Contains(v6) {
		t.Errorf("addresses %v outside the default pools", iface.IPs)
	}
	if !vmiReady(vmi) || vmi.Status.GuestOSInfo.ID == "" {
		t.Errorf("running VMI not Ready or without guest info: %+v", vmi.Status)
	}

	// The launcher pod carries the VMI's labels and mirrors its state.
	pods := s.launcherPods("vm-a")
	if len(pods) != 1 {
		t.Fatalf("launcher pods = %d, want 1", len(pods))
	}
	pod := pods[0]
	if !regexp.MustCompile(`^virt-launcher-vm-a-[a-z0-9]{5}$`).MatchString(pod.Name) {
		t.Errorf("launcher pod name %q", pod.Name)
	}
	// kube-apiserver's PodTopologyLabels admission copies the node's zone/region labels onto
	// a pod when it is bound, as on a real cluster; they are not the VMI's.
	podLabels := withoutKeys(pod.Labels, append(kubevirtPodLabels, corev1.LabelTopologyZone, corev1.LabelTopologyRegion)...)
	vmiLabels := withoutKeys(vmi.Labels, kubevirtv1.NodeNameLabel) // set after the pod was created
	if !reflect.DeepEqual(podLabels, vmiLabels) {
		t.Errorf("pod labels %v, want the VMI's %v", podLabels, vmiLabels)
	}
	if pod.Labels[kubevirtv1.AppLabel] != "virt-launcher" || pod.Labels[kubevirtv1.CreatedByLabel] != string(vmi.UID) {
		t.Errorf("pod KubeVirt labels %v", pod.Labels)
	}
	if ref := metav1.GetControllerOf(&pod); ref == nil || ref.UID != vmi.UID {
		t.Errorf("pod owner %+v, want the VMI", ref)
	}
	if pod.Spec.NodeName != vmi.Status.NodeName || len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Name != "compute" {
		t.Errorf("pod spec nodeName=%q containers=%v", pod.Spec.NodeName, pod.Spec.Containers)
	}
	var podIPs []string
	for _, ip := range pod.Status.PodIPs {
		podIPs = append(podIPs, ip.IP)
	}
	if pod.Status.Phase != corev1.PodRunning || !slices.Equal(podIPs, iface.IPs) || !podReady(&pod) {
		t.Errorf("pod status phase=%s ips=%v ready=%v, want Running %v ready", pod.Status.Phase, podIPs, podReady(&pod), iface.IPs)
	}

	// VM status reports the running VMI.
	s.eventually("VM status Running", func() (bool, error) {
		got := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-a", got); err != nil {
			return false, err
		}
		return got.Status.PrintableStatus == kubevirtv1.VirtualMachineStatusRunning && got.Status.Ready && got.Status.Created &&
			vmCondition(got, kubevirtv1.VirtualMachineReady) == corev1.ConditionTrue &&
			controllerutil.ContainsFinalizer(got, kubevirtv1.VirtualMachineControllerFinalizer), nil
	})
}

func TestStoppingVMTakesVMIDown(t *testing.T) {
	s := startSim(t, Options{})
	phases := s.recordPhases()
	s.create(s.newVM("vm-stop", kubevirtv1.RunStrategyAlways))
	s.waitVMIPhase("vm-stop", kubevirtv1.Running)
	podName := s.launcherPods("vm-stop")[0].Name

	s.setRunStrategy("vm-stop", kubevirtv1.RunStrategyHalted)
	s.waitGone("vm-stop", &kubevirtv1.VirtualMachineInstance{})
	if !phases.has("vm-stop", kubevirtv1.Succeeded) {
		t.Errorf("VMI phases %v, want Succeeded before it went", phases.of("vm-stop"))
	}
	s.waitGone(podName, &corev1.Pod{})
	s.eventually("VM Stopped", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-stop", vm); err != nil {
			return false, err
		}
		return vm.Status.PrintableStatus == kubevirtv1.VirtualMachineStatusStopped && !vm.Status.Created && !vm.Status.Ready, nil
	})
	// Halted means halted: no new VMI comes.
	s.consistently("no VMI for a halted VM", 10*testPhaseDelay, func() error {
		if err := s.get("vm-stop", &kubevirtv1.VirtualMachineInstance{}); err == nil {
			return fmt.Errorf("a halted VM got a VMI")
		}
		return nil
	})
}

func TestDeletingVMWaitsForVMI(t *testing.T) {
	s := startSim(t, Options{})
	phases := s.recordPhases()
	s.create(s.newVM("vm-del", kubevirtv1.RunStrategyAlways))
	s.waitVMIPhase("vm-del", kubevirtv1.Running)
	podName := s.launcherPods("vm-del")[0].Name

	// Hold the guest shutdown so the finalizer's effect is observable.
	s.faults.Stall(FaultVMISucceeded)
	vm := &kubevirtv1.VirtualMachine{}
	if err := s.get("vm-del", vm); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Delete(s.ctx, vm); err != nil {
		t.Fatal(err)
	}
	s.eventually("VM Terminating and VMI stopping", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := s.get("vm-del", vm); err != nil {
			return false, err
		}
		if err := s.get("vm-del", vmi); err != nil {
			return false, err
		}
		return vm.Status.PrintableStatus == kubevirtv1.VirtualMachineStatusTerminating && vmi.DeletionTimestamp != nil, nil
	})
	s.consistently("VM kept by its finalizer while the VMI shuts down", 5*testPhaseDelay, func() error {
		return s.get("vm-del", &kubevirtv1.VirtualMachine{})
	})
	s.faults.Release(FaultVMISucceeded)

	s.waitGone("vm-del", &kubevirtv1.VirtualMachine{})
	s.waitGone("vm-del", &kubevirtv1.VirtualMachineInstance{})
	s.waitGone(podName, &corev1.Pod{})
	if !phases.has("vm-del", kubevirtv1.Succeeded) {
		t.Errorf("VMI phases %v, want Succeeded", phases.of("vm-del"))
	}
}

func TestDeletingVMIDeletesPodAndVMRestartsIt(t *testing.T) {
	s := startSim(t, Options{})
	s.create(s.newVM("vm-re", kubevirtv1.RunStrategyAlways))
	first := s.waitVMIPhase("vm-re", kubevirtv1.Running)
	podName := s.launcherPods("vm-re")[0].Name

	if err := s.c.Delete(s.ctx, first); err != nil {
		t.Fatal(err)
	}
	s.waitGone(podName, &corev1.Pod{})
	s.eventually("a new VMI running", func() (bool, error) {
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := s.get("vm-re", vmi); err != nil {
			return false, nil
		}
		return vmi.UID != first.UID && vmi.Status.Phase == kubevirtv1.Running, nil
	})
	if pods := s.launcherPods("vm-re"); len(pods) != 1 || pods[0].Name == podName {
		t.Errorf("launcher pods after restart: %d (old %s)", len(pods), podName)
	}
}

func TestTwoVMsGetDistinctAddressesAndNodes(t *testing.T) {
	s := startSim(t, Options{})
	s.create(s.newVM("vm-1", kubevirtv1.RunStrategyAlways))
	s.create(s.newVM("vm-2", kubevirtv1.RunStrategyAlways))
	a := s.waitVMIPhase("vm-1", kubevirtv1.Running)
	b := s.waitVMIPhase("vm-2", kubevirtv1.Running)
	ipsA, ipsB := a.Status.Interfaces[0].IPs, b.Status.Interfaces[0].IPs
	for _, ip := range ipsA {
		if slices.Contains(ipsB, ip) {
			t.Errorf("address %s given to both VMIs (%v, %v)", ip, ipsA, ipsB)
		}
	}
	if a.Status.NodeName == b.Status.NodeName {
		t.Errorf("both VMIs on %s; the scheduler should spread them", a.Status.NodeName)
	}
}

func TestDeprecatedRunningTrueStartsVM(t *testing.T) {
	s := startSim(t, Options{})
	vm := s.newVM("vm-legacy", kubevirtv1.RunStrategyAlways)
	vm.Spec.RunStrategy = nil
	vm.Spec.Running = ptrTo(true)
	s.create(vm)
	s.waitVMIPhase("vm-legacy", kubevirtv1.Running)
}

func TestHotpluggedVolumeInTemplateReachesVMIAcrossRestart(t *testing.T) {
	s := startSim(t, Options{})
	vm := s.newVM("vm-hp", kubevirtv1.RunStrategyAlways)
	// What virt-api's addvolume leaves in the VM template: a hotpluggable volume and its disk.
	vm.Spec.Template.Spec.Volumes = append(vm.Spec.Template.Spec.Volumes, kubevirtv1.Volume{
		Name: "data-1",
		VolumeSource: kubevirtv1.VolumeSource{PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{
			PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: "pvc-data-1"},
			Hotpluggable:                      true,
		}},
	})
	vm.Spec.Template.Spec.Domain.Devices.Disks = append(vm.Spec.Template.Spec.Domain.Devices.Disks, kubevirtv1.Disk{
		Name: "data-1", Serial: "tc-data-1",
		DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusSCSI}},
	})
	s.create(vm)
	first := s.waitVMIPhase("vm-hp", kubevirtv1.Running)
	assertHotplugged(t, first)

	// A restart (stop, start) builds a new VMI from the template: the volume is still there.
	s.setRunStrategy("vm-hp", kubevirtv1.RunStrategyHalted)
	s.waitGone("vm-hp", &kubevirtv1.VirtualMachineInstance{})
	s.setRunStrategy("vm-hp", kubevirtv1.RunStrategyAlways)
	second := s.waitVMIPhase("vm-hp", kubevirtv1.Running)
	if second.UID == first.UID {
		t.Fatal("VMI was not recreated")
	}
	assertHotplugged(t, second)
}

func assertHotplugged(t *testing.T, vmi *kubevirtv1.VirtualMachineInstance) {
	t.Helper()
	var vol *kubevirtv1.Volume
	for i := range vmi.Spec.Volumes {
		if vmi.Spec.Volumes[i].Name == "data-1" {
			vol = &vmi.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.PersistentVolumeClaim == nil || !vol.PersistentVolumeClaim.Hotpluggable || vol.PersistentVolumeClaim.ClaimName != "pvc-data-1" {
		t.Errorf("VMI volumes %+v lack hotpluggable data-1", vmi.Spec.Volumes)
	}
	var disk *kubevirtv1.Disk
	for i := range vmi.Spec.Domain.Devices.Disks {
		if vmi.Spec.Domain.Devices.Disks[i].Name == "data-1" {
			disk = &vmi.Spec.Domain.Devices.Disks[i]
		}
	}
	if disk == nil || disk.Serial != "tc-data-1" || disk.Disk == nil || disk.Disk.Bus != kubevirtv1.DiskBusSCSI {
		t.Errorf("VMI disks %+v lack data-1 with its serial and bus", vmi.Spec.Domain.Devices.Disks)
	}
}

func (s *sim) vmUID(name string) types.UID {
	s.t.Helper()
	vm := &kubevirtv1.VirtualMachine{}
	if err := s.get(name, vm); err != nil {
		s.t.Fatal(err)
	}
	return vm.UID
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	return a
}

func withoutKeys(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if !slices.Contains(keys, k) {
			out[k] = v
		}
	}
	return out
}

func podReady(pod *corev1.Pod) bool {
	c := podCondition(pod, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

func vmCondition(vm *kubevirtv1.VirtualMachine, t kubevirtv1.VirtualMachineConditionType) corev1.ConditionStatus {
	for _, c := range vm.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// TestInfraNodeLeasesRenewed: every infra Node's Lease in kube-node-lease is created, owned by
// the Node, and renewed, as its kubelet would, so a management cluster running the real node
// lifecycle controller keeps the simulated hosts Ready.
func TestInfraNodeLeasesRenewed(t *testing.T) {
	s := startSim(t, Options{})
	nodes := Options{}.withDefaults().Nodes
	if len(nodes) == 0 {
		t.Fatal("no default infra nodes")
	}
	var first metav1.MicroTime
	for i, n := range nodes {
		lease := &coordinationv1.Lease{}
		s.eventually("the Lease of infra node "+n.Name, func() (bool, error) {
			err := s.c.Get(s.ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: n.Name}, lease)
			return err == nil && lease.Spec.RenewTime != nil, client.IgnoreNotFound(err)
		})
		node := &corev1.Node{}
		if err := s.c.Get(s.ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
			t.Fatal(err)
		}
		if len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].UID != node.UID {
			t.Errorf("Lease %s owners %v, want the Node (uid %s)", n.Name, lease.OwnerReferences, node.UID)
		}
		if d := lease.Spec.LeaseDurationSeconds; d == nil || *d != 40 {
			t.Errorf("Lease %s duration %v, want 40 s", n.Name, d)
		}
		if i == 0 {
			first = *lease.Spec.RenewTime
		}
	}
	lease := &coordinationv1.Lease{}
	s.eventually("the Lease of "+nodes[0].Name+" renewed", func() (bool, error) {
		err := s.c.Get(s.ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: nodes[0].Name}, lease)
		return err == nil && lease.Spec.RenewTime.After(first.Time), err
	})
	// The first renewal seen may be an earlier test's simulator's (the cluster is shared), so
	// only an upper bound: the 40 s Lease must never come close to lapsing.
	if gap := lease.Spec.RenewTime.Sub(first.Time); gap > 20*time.Second {
		t.Errorf("renewed %s after the previous renewal, want at most ≈10 s", gap)
	}
}
