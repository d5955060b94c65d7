package kubevirt

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func clientKeyNode(name string) client.ObjectKey { return client.ObjectKey{Name: name} }

func TestAllocatorIsUniqueIdempotentAndNextFit(t *testing.T) {
	a, err := newAllocator("10.0.0.0/29", "fd00::/120", nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := a.Allocate("a")
	if err != nil {
		t.Fatal(err)
	}
	if first[0] != netip.MustParseAddr("10.0.0.2") || first[1] != netip.MustParseAddr("fd00::2") {
		t.Errorf("first addresses %v, want .2 after network and gateway", first)
	}
	again, _ := a.Allocate("a")
	if again[0] != first[0] || again[1] != first[1] {
		t.Errorf("second Allocate for the same owner = %v, want %v", again, first)
	}
	second, _ := a.Allocate("b")
	if second[0] == first[0] || second[1] == first[1] {
		t.Errorf("owners share addresses: %v %v", first, second)
	}
	a.Release("a")
	third, _ := a.Allocate("c")
	if third[0] == first[0] {
		t.Errorf("released %v handed out again at once; next-fit should move on", first[0])
	}
}

func TestAllocatorExhaustionAndReserve(t *testing.T) {
	// /29: .0 network, .1 gateway, .7 broadcast → .2-.6 assignable.
	a, err := newAllocator("10.0.0.0/29", "fd00::/64", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Reserve("old", []netip.Addr{netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("192.168.1.1")})
	seen := map[netip.Addr]bool{}
	for i := range 4 {
		got, err := a.Allocate(string(rune('a' + i)))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if got[0] == netip.MustParseAddr("10.0.0.3") || got[0] == netip.MustParseAddr("10.0.0.7") || seen[got[0]] {
			t.Errorf("allocation %d got %v (reserved, broadcast or duplicate)", i, got[0])
		}
		seen[got[0]] = true
	}
	if _, err := a.Allocate("e"); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Errorf("allocation beyond the pool: err = %v, want exhausted", err)
	}
	a.Release("old")
	if got, err := a.Allocate("f"); err != nil || got[0] != netip.MustParseAddr("10.0.0.3") {
		t.Errorf("after releasing the reservation got %v, %v", got, err)
	}
}

func TestAllocatorRejectsBadPools(t *testing.T) {
	for _, tc := range []struct{ v4, v6 string }{
		{"not-a-cidr", "fd00::/64"},
		{"fd00::/64", "fd00::/64"},
		{"10.0.0.0/16", "10.1.0.0/16"},
		{"10.0.0.0/31", "fd00::/64"},
	} {
		if _, err := newAllocator(tc.v4, tc.v6, nil); err == nil {
			t.Errorf("newAllocator(%q, %q) accepted", tc.v4, tc.v6)
		}
	}
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	for _, fams := range [][]corev1.IPFamily{{v4, v4}, {"IPv5"}, {v4, v6, v4}} {
		if _, err := newAllocator("10.0.0.0/29", "fd00::/64", fams); err == nil {
			t.Errorf("families %v accepted", fams)
		}
	}
}

// TestAllocatorFamilies: the pod network's families decide which addresses a VMI gets and in
// which order: IPv6-primary dual-stack lists the IPv6 address first, single-stack only one.
func TestAllocatorFamilies(t *testing.T) {
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	for _, tc := range []struct {
		fams []corev1.IPFamily
		want []string
	}{
		{nil, []string{"10.0.0.2", "fd00::2"}},
		{[]corev1.IPFamily{v6, v4}, []string{"fd00::2", "10.0.0.2"}},
		{[]corev1.IPFamily{v4}, []string{"10.0.0.2"}},
		{[]corev1.IPFamily{v6}, []string{"fd00::2"}},
	} {
		a, err := newAllocator("10.0.0.0/29", "fd00::/64", tc.fams)
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.Allocate("a")
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, g := range got {
			s = append(s, g.String())
		}
		if strings.Join(s, ",") != strings.Join(tc.want, ",") {
			t.Errorf("families %v: addresses %v, want %v", tc.fams, s, tc.want)
		}
	}
}

func node(name string, mod func(*corev1.Node)) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelSchedulable: "true"}}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if mod != nil {
		mod(&n)
	}
	return n
}

func TestPickNode(t *testing.T) {
	plain := &kubevirtv1.VirtualMachineInstance{}
	tolerant := &kubevirtv1.VirtualMachineInstance{Spec: kubevirtv1.VirtualMachineInstanceSpec{
		Tolerations: []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}},
	}}
	selective := &kubevirtv1.VirtualMachineInstance{Spec: kubevirtv1.VirtualMachineInstanceSpec{NodeSelector: map[string]string{"gpu": "yes"}}}
	tainted := func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule}}
	}
	for _, tc := range []struct {
		name  string
		vmi   *kubevirtv1.VirtualMachineInstance
		nodes []corev1.Node
		load  map[string]int
		want  string
		why   string
	}{
		{"least loaded wins", plain, []corev1.Node{node("a", nil), node("b", nil)}, map[string]int{"a": 2, "b": 1}, "b", ""},
		{"ties by name", plain, []corev1.Node{node("b", nil), node("a", nil)}, nil, "a", ""},
		{"cordoned skipped", plain, []corev1.Node{node("a", func(n *corev1.Node) { n.Spec.Unschedulable = true }), node("b", nil)}, nil, "b", ""},
		{"not ready skipped", plain, []corev1.Node{node("a", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse })}, nil, "", "1 node(s) were not ready"},
		{"no virt-handler", plain, []corev1.Node{node("a", func(n *corev1.Node) { delete(n.Labels, LabelSchedulable) })}, nil, "", "didn't match"},
		{"untolerated taint", plain, []corev1.Node{node("a", tainted)}, nil, "", "untolerated taint {dedicated: x}"},
		{"tolerated taint", tolerant, []corev1.Node{node("a", tainted)}, nil, "a", ""},
		{"node selector", selective, []corev1.Node{node("a", nil), node("b", func(n *corev1.Node) { n.Labels["gpu"] = "yes" })}, nil, "b", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := pickNode(tc.vmi, tc.nodes, tc.load)
			if got != tc.want {
				t.Errorf("pickNode = %q (%s), want %q", got, why, tc.want)
			}
			if tc.want == "" && !strings.Contains(why, tc.why) {
				t.Errorf("message %q lacks %q", why, tc.why)
			}
		})
	}
}

func TestPrintableStatus(t *testing.T) {
	always := kubevirtv1.RunStrategyAlways
	halted := kubevirtv1.RunStrategyHalted
	now := metav1.Now()
	vm := func(rs kubevirtv1.VirtualMachineRunStrategy, mod func(*kubevirtv1.VirtualMachine)) *kubevirtv1.VirtualMachine {
		v := &kubevirtv1.VirtualMachine{Spec: kubevirtv1.VirtualMachineSpec{RunStrategy: &rs}}
		if mod != nil {
			mod(v)
		}
		return v
	}
	vmi := func(p kubevirtv1.VirtualMachineInstancePhase, mod func(*kubevirtv1.VirtualMachineInstance)) *kubevirtv1.VirtualMachineInstance {
		v := &kubevirtv1.VirtualMachineInstance{Status: kubevirtv1.VirtualMachineInstanceStatus{Phase: p}}
		if mod != nil {
			mod(v)
		}
		return v
	}
	deleting := func(o interface{ SetDeletionTimestamp(*metav1.Time) }) { o.SetDeletionTimestamp(&now) }
	failedOnce := func(v *kubevirtv1.VirtualMachine) {
		v.Status.StartFailure = &kubevirtv1.VirtualMachineStartFailure{ConsecutiveFailCount: 1}
	}
	for _, tc := range []struct {
		name string
		vm   *kubevirtv1.VirtualMachine
		vmi  *kubevirtv1.VirtualMachineInstance
		want kubevirtv1.VirtualMachinePrintableStatus
	}{
		{"no VMI", vm(halted, nil), nil, kubevirtv1.VirtualMachineStatusStopped},
		{"pending", vm(always, nil), vmi(kubevirtv1.Pending, nil), kubevirtv1.VirtualMachineStatusStarting},
		{"scheduled", vm(always, nil), vmi(kubevirtv1.Scheduled, nil), kubevirtv1.VirtualMachineStatusStarting},
		{"running", vm(always, nil), vmi(kubevirtv1.Running, nil), kubevirtv1.VirtualMachineStatusRunning},
		{"VMI deleting", vm(halted, nil), vmi(kubevirtv1.Running, func(v *kubevirtv1.VirtualMachineInstance) { deleting(v) }), kubevirtv1.VirtualMachineStatusStopping},
		{"VM deleting wins", vm(always, func(v *kubevirtv1.VirtualMachine) { deleting(v) }), vmi(kubevirtv1.Running, nil), kubevirtv1.VirtualMachineStatusTerminating},
		{"succeeded", vm(halted, nil), vmi(kubevirtv1.Succeeded, nil), kubevirtv1.VirtualMachineStatusStopped},
		{"start failures", vm(always, failedOnce), nil, kubevirtv1.VirtualMachineStatusCrashLoopBackOff},
		{"start failures but halted", vm(halted, failedOnce), nil, kubevirtv1.VirtualMachineStatusStopped},
		{"unschedulable", vm(always, nil), vmi(kubevirtv1.Scheduling, func(v *kubevirtv1.VirtualMachineInstance) {
			v.Status.Conditions = []kubevirtv1.VirtualMachineInstanceCondition{{
				Type: kubevirtv1.VirtualMachineInstanceConditionType(corev1.PodScheduled), Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			}}
		}), kubevirtv1.VirtualMachineStatusUnschedulable},
	} {
		if got := printableStatus(tc.vm, tc.vmi); got != tc.want {
			t.Errorf("%s: printableStatus = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestStartFailureCountsOnceAndClearsAfterRunning(t *testing.T) {
	always := kubevirtv1.RunStrategyAlways
	vm := &kubevirtv1.VirtualMachine{Spec: kubevirtv1.VirtualMachineSpec{RunStrategy: &always}}
	failed := &kubevirtv1.VirtualMachineInstance{Status: kubevirtv1.VirtualMachineInstanceStatus{Phase: kubevirtv1.Failed}}
	failed.UID = "u1"
	now := time.Now()
	syncStartFailure(vm, failed, now, time.Second)
	syncStartFailure(vm, failed, now, time.Second)
	sf := vm.Status.StartFailure
	if sf == nil || sf.ConsecutiveFailCount != 1 || sf.LastFailedVMIUID != "u1" {
		t.Fatalf("start failure = %+v, want one failure of u1", sf)
	}
	if left := backoffLeft(vm, now); left < time.Second || left > 1500*time.Millisecond {
		t.Errorf("backoff after one failure = %v, want 1s..1.5s", left)
	}
	running := &kubevirtv1.VirtualMachineInstance{Status: kubevirtv1.VirtualMachineInstanceStatus{Phase: kubevirtv1.Running}}
	syncStartFailure(vm, running, now, time.Second)
	if vm.Status.StartFailure != nil {
		t.Errorf("start failure not cleared by a running VMI: %+v", vm.Status.StartFailure)
	}
}

func TestStartBackoffGrowsAndCaps(t *testing.T) {
	for count, lo := range map[int]time.Duration{1: 10 * time.Second, 2: 40 * time.Second, 3: 90 * time.Second} {
		if d := startBackoff(count, 10*time.Second); d < lo || d > lo*3/2 {
			t.Errorf("startBackoff(%d) = %v, want %v..%v", count, d, lo, lo*3/2)
		}
	}
	if d := startBackoff(10, 10*time.Second); d != 300*time.Second {
		t.Errorf("startBackoff(10) = %v, want the 300s cap", d)
	}
}

func TestVMIFromVMDefaults(t *testing.T) {
	rs := kubevirtv1.RunStrategyAlways
	vm := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns", UID: "vm-uid", Generation: 3},
		Spec: kubevirtv1.VirtualMachineSpec{RunStrategy: &rs, Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
			Spec:       kubevirtv1.VirtualMachineInstanceSpec{Volumes: []kubevirtv1.Volume{{Name: "root"}}},
		}},
	}
	vmi := vmiFromVM(vm)
	if vmi.Name != "v" || vmi.Namespace != "ns" || vmi.Labels["a"] != "b" {
		t.Errorf("metadata %+v", vmi.ObjectMeta)
	}
	if ref := metav1.GetControllerOf(vmi); ref == nil || ref.UID != "vm-uid" || ref.Kind != "VirtualMachine" {
		t.Errorf("owner %+v", ref)
	}
	if len(vmi.Spec.Domain.Devices.Disks) != 1 || vmi.Spec.Domain.Devices.Disks[0].Name != "root" {
		t.Errorf("disks %+v, want a default disk for volume root", vmi.Spec.Domain.Devices.Disks)
	}
	if len(vmi.Spec.Networks) != 1 || vmi.Spec.Networks[0].Pod == nil || vmi.Spec.Domain.Devices.Interfaces[0].Name != "default" {
		t.Errorf("networks %+v, want the default pod network", vmi.Spec.Networks)
	}
	if vmi.Annotations[kubevirtv1.VirtualMachineGenerationAnnotation] != "3" {
		t.Errorf("annotations %v lack the VM generation", vmi.Annotations)
	}
	if vm.Spec.Template.Spec.Networks != nil {
		t.Error("vmiFromVM modified the VM template")
	}
}
