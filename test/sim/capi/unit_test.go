package capi

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

func machineAt(name string, age time.Duration, now time.Time, mod func(*clusterv1.Machine)) *clusterv1.Machine {
	m := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(now.Add(-age))}}
	m.Status.NodeRef.Name = name // healthy unless mod says otherwise
	if mod != nil {
		mod(m)
	}
	return m
}

func TestMachinesToDelete(t *testing.T) {
	now := time.Now()
	annotated := func(m *clusterv1.Machine) { m.Annotations = map[string]string{clusterv1.DeleteMachineAnnotation: ""} }
	deleting := func(m *clusterv1.Machine) { m.DeletionTimestamp = &metav1.Time{Time: now} }
	noNode := func(m *clusterv1.Machine) { m.Status.NodeRef.Name = "" }
	for _, tc := range []struct {
		name     string
		order    clusterv1.MachineSetDeletionOrder
		machines []*clusterv1.Machine
		n        int
		want     []string
	}{
		{"oldest first", clusterv1.OldestMachineSetDeletionOrder,
			[]*clusterv1.Machine{machineAt("a", time.Hour, now, nil), machineAt("b", 48*time.Hour, now, nil), machineAt("c", time.Minute, now, nil)}, 2, []string{"b", "a"}},
		{"newest first", clusterv1.NewestMachineSetDeletionOrder,
			[]*clusterv1.Machine{machineAt("a", time.Hour, now, nil), machineAt("b", 48*time.Hour, now, nil), machineAt("c", time.Minute, now, nil)}, 1, []string{"c"}},
		{"random ties by name", "",
			[]*clusterv1.Machine{machineAt("b", time.Hour, now, nil), machineAt("a", time.Minute, now, nil)}, 1, []string{"a"}},
		{"annotation beats age", clusterv1.OldestMachineSetDeletionOrder,
			[]*clusterv1.Machine{machineAt("old", 100*time.Hour, now, nil), machineAt("young", time.Minute, now, annotated)}, 1, []string{"young"}},
		{"deleting first", clusterv1.OldestMachineSetDeletionOrder,
			[]*clusterv1.Machine{machineAt("x", time.Minute, now, annotated), machineAt("y", time.Minute, now, deleting)}, 1, []string{"y"}},
		{"unhealthy before healthy old", clusterv1.OldestMachineSetDeletionOrder,
			[]*clusterv1.Machine{machineAt("old", 1000*time.Hour, now, nil), machineAt("joining", time.Minute, now, noNode)}, 1, []string{"joining"}},
		{"more than there are", "", []*clusterv1.Machine{machineAt("a", 0, now, nil)}, 3, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prio, err := priorityFor(tc.order)
			if err != nil {
				t.Fatal(err)
			}
			got := machinesToDelete(tc.machines, tc.n, prio, now)
			var names []string
			for _, m := range got {
				names = append(names, m.Name)
			}
			if len(names) != len(tc.want) {
				t.Fatalf("got %v, want %v", names, tc.want)
			}
			for i := range names {
				if names[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", names, tc.want)
				}
			}
		})
	}
	if _, err := priorityFor("Smallest"); err == nil {
		t.Error("unknown deletion order accepted")
	}
}

func TestCapacities(t *testing.T) {
	q := resource.MustParse
	for _, tc := range []struct {
		name             string
		domain           kubevirtv1.DomainSpec
		guestCPU, tmplCP string
		guestMem, tmplMe string
	}{
		{"topology and guest memory", kubevirtv1.DomainSpec{
			CPU: &kubevirtv1.CPU{Sockets: 2, Cores: 2, Threads: 1}, Memory: &kubevirtv1.Memory{Guest: ptrTo(q("8Gi"))},
			Resources: kubevirtv1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: q("4Gi")}},
		}, "4", "4", "8Gi", "4Gi"},
		{"cpu from request rounds up", kubevirtv1.DomainSpec{
			Resources: kubevirtv1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("1500m"), corev1.ResourceMemory: q("2Gi")}},
		}, "2", "2", "2Gi", "2Gi"},
		{"nothing given", kubevirtv1.DomainSpec{}, "1", "1", "", ""},
	} {
		spec := &kubevirtv1.VirtualMachineInstanceSpec{Domain: tc.domain}
		g, tm := guestCapacity(spec), templateCapacity(spec)
		check := func(what string, rl corev1.ResourceList, name corev1.ResourceName, want string) {
			got, ok := rl[name]
			if want == "" {
				if ok {
					t.Errorf("%s: %s %s = %s, want none", tc.name, what, name, got.String())
				}
				return
			}
			if got.Cmp(q(want)) != 0 {
				t.Errorf("%s: %s %s = %s, want %s", tc.name, what, name, got.String(), want)
			}
		}
		check("guest", g, corev1.ResourceCPU, tc.guestCPU)
		check("guest", g, corev1.ResourceMemory, tc.guestMem)
		check("template", tm, corev1.ResourceCPU, tc.tmplCP)
		check("template", tm, corev1.ResourceMemory, tc.tmplMe)
		if p := g[corev1.ResourcePods]; p.Value() != 110 {
			t.Errorf("%s: pods = %s", tc.name, p.String())
		}
	}
}

func TestBuildVM(t *testing.T) {
	kvm := NewKubevirtMachineTemplate("ns", "tmpl", "alpha", 2, "3Gi")
	// A KubevirtMachine carries the template's spec.template.spec as its spec.
	spec := kvm.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	kvm.Object["spec"] = spec
	kvm.SetKind(kindKubevirtMachine)
	kvm.SetName("alpha-md-x-abcde")
	m := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Name: "alpha-md-x-abcde"},
		Spec: clusterv1.MachineSpec{ClusterName: "alpha", Bootstrap: clusterv1.Bootstrap{DataSecretName: ptrTo("boot")}}}

	vm, err := buildVM(kvm, m)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Name != "alpha-md-x-abcde" || vm.Namespace != "ns" {
		t.Errorf("VM %s/%s", vm.Namespace, vm.Name)
	}
	for _, l := range []map[string]string{vm.Labels, vm.Spec.Template.ObjectMeta.Labels} {
		if l[infra.LabelClusterName] != "alpha" || l[infra.LabelRole] != infra.RoleWorker || l[LabelKubevirtMachineName] != vm.Name {
			t.Errorf("labels %v", l)
		}
	}
	if rs, _ := vm.RunStrategy(); rs != kubevirtv1.RunStrategyAlways {
		t.Errorf("run strategy %s", rs)
	}
	var cloudInit bool
	for _, v := range vm.Spec.Template.Spec.Volumes {
		if v.CloudInitConfigDrive != nil && v.CloudInitConfigDrive.UserDataSecretRef.Name == "boot-userdata" {
			cloudInit = true
		}
	}
	if !cloudInit {
		t.Errorf("volumes %+v lack the cloud-init drive", vm.Spec.Template.Spec.Volumes)
	}

	m.Labels = map[string]string{clusterv1.MachineControlPlaneLabel: ""}
	if vm, _ := buildVM(kvm, m); vm.Labels[infra.LabelRole] != "control-plane" {
		t.Errorf("control-plane machine got role %q", vm.Labels[infra.LabelRole])
	}
	m.Spec.Bootstrap.DataSecretName = nil
	if _, err := buildVM(kvm, m); err == nil {
		t.Error("VM built without bootstrap data")
	}
}

func TestDefaultMachineDeployment(t *testing.T) {
	md := &clusterv1.MachineDeployment{ObjectMeta: metav1.ObjectMeta{Name: "md", Annotations: map[string]string{
		clusterv1.AutoscalerMinSizeAnnotation: "2", clusterv1.AutoscalerMaxSizeAnnotation: "5",
	}}, Spec: clusterv1.MachineDeploymentSpec{ClusterName: "alpha"}}
	if !DefaultMachineDeployment(md) {
		t.Fatal("nothing defaulted")
	}
	if *md.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want the min-size 2", *md.Spec.Replicas)
	}
	for _, l := range []map[string]string{md.Spec.Selector.MatchLabels, md.Spec.Template.Labels} {
		if l[clusterv1.MachineDeploymentNameLabel] != "md" || l[clusterv1.ClusterNameLabel] != "alpha" {
			t.Errorf("labels %v", l)
		}
	}
	if md.Labels[clusterv1.ClusterNameLabel] != "alpha" || md.Spec.Template.Spec.ClusterName != "alpha" {
		t.Errorf("cluster name not propagated: %v %q", md.Labels, md.Spec.Template.Spec.ClusterName)
	}
	if DefaultMachineDeployment(md) {
		t.Error("defaulting is not idempotent")
	}
}

func TestSetMachinePhase(t *testing.T) {
	yes := ptrTo(true)
	for _, tc := range []struct {
		name   string
		mod    func(*clusterv1.Machine)
		legacy bool
		want   clusterv1.MachinePhase
	}{
		{"new", func(*clusterv1.Machine) {}, false, clusterv1.MachinePhasePending},
		{"bootstrapped", func(m *clusterv1.Machine) { m.Status.Initialization.BootstrapDataSecretCreated = yes }, false, clusterv1.MachinePhaseProvisioning},
		{"providerID", func(m *clusterv1.Machine) {
			m.Status.Initialization.BootstrapDataSecretCreated = yes
			m.Spec.ProviderID = "kubevirt://x"
		}, false, clusterv1.MachinePhaseProvisioned},
		{"node", func(m *clusterv1.Machine) {
			m.Status.Initialization.BootstrapDataSecretCreated, m.Status.Initialization.InfrastructureProvisioned = yes, yes
			m.Spec.ProviderID, m.Status.NodeRef.Name = "kubevirt://x", "x"
		}, false, clusterv1.MachinePhaseRunning},
		{"failed v1beta2", withFailure, false, clusterv1.MachinePhaseProvisioning},
		{"failed legacy", withFailure, true, clusterv1.MachinePhaseFailed},
		{"deleting wins", func(m *clusterv1.Machine) { withFailure(m); m.DeletionTimestamp = &metav1.Time{} }, true, clusterv1.MachinePhaseDeleting},
	} {
		m := &clusterv1.Machine{}
		tc.mod(m)
		setMachinePhase(m, tc.legacy)
		if m.Status.Phase != string(tc.want) {
			t.Errorf("%s: phase %s, want %s", tc.name, m.Status.Phase, tc.want)
		}
	}
}

func withFailure(m *clusterv1.Machine) {
	m.Status.Initialization.BootstrapDataSecretCreated = ptrTo(true)
	m.Status.Deprecated = &clusterv1.MachineDeprecatedStatus{V1Beta1: &clusterv1.MachineV1Beta1DeprecatedStatus{FailureMessage: ptrTo("boom")}}
}
