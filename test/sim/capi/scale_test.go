package capi

import (
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

func TestScaleFromZeroToRunningMachinesWithTenantNodes(t *testing.T) {
	s := startSim(t, Options{})
	phases := s.recordMachinePhases()
	s.create(s.newMD("md-a", 0))
	s.eventually("MachineSet at 0 replicas", func() (bool, error) {
		var sets clusterv1.MachineSetList
		if err := s.c.List(s.ctx, &sets, client.InNamespace(s.ns)); err != nil {
			return false, err
		}
		return len(sets.Items) == 1 && deref(sets.Items[0].Spec.Replicas) == 0, nil
	})

	s.setReplicas("md-a", 2)
	machines := s.waitRunning("md-a", 2)

	var sets clusterv1.MachineSetList
	if err := s.c.List(s.ctx, &sets, client.InNamespace(s.ns)); err != nil || len(sets.Items) != 1 {
		t.Fatalf("MachineSets: %v %v", sets.Items, err)
	}
	ms := sets.Items[0]
	if !regexp.MustCompile(`^md-a-[a-z0-9]{5}$`).MatchString(ms.Name) || ms.Labels[clusterv1.MachineDeploymentNameLabel] != "md-a" ||
		ms.Labels[clusterv1.ClusterNameLabel] != s.cluster || ms.Spec.ClusterName != s.cluster {
		t.Errorf("MachineSet %s labels %v clusterName %q", ms.Name, ms.Labels, ms.Spec.ClusterName)
	}
	if ref := metav1.GetControllerOf(&ms); ref == nil || ref.Kind != "MachineDeployment" || ref.Name != "md-a" {
		t.Errorf("MachineSet owner %+v", ref)
	}

	for _, m := range machines {
		s.checkMachine(&m, &ms, phases.of(m.Name))
	}

	s.eventually("MachineDeployment status counts 2", func() (bool, error) {
		md := &clusterv1.MachineDeployment{}
		if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: "md-a"}, md); err != nil {
			return false, err
		}
		st := md.Status
		return deref(st.Replicas) == 2 && deref(st.ReadyReplicas) == 2 && deref(st.AvailableReplicas) == 2 &&
			deref(st.UpToDateReplicas) == 2 && st.Selector != "" && st.Phase == "Running", nil
	})

	// The /scale subresource, as the cluster autoscaler and kubectl scale use it.
	md := &clusterv1.MachineDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "md-a"}}
	scale := &autoscalingv1.Scale{}
	if err := s.c.SubResource("scale").Get(s.ctx, md, scale); err != nil {
		t.Fatalf("GET /scale: %v", err)
	}
	if scale.Spec.Replicas != 2 || scale.Status.Replicas != 2 || scale.Status.Selector == "" {
		t.Errorf("scale = %+v, want 2/2 with a selector", scale)
	}
	scale.Spec.Replicas = 3
	if err := s.c.SubResource("scale").Update(s.ctx, md, client.WithSubResourceBody(scale)); err != nil {
		t.Fatalf("PUT /scale: %v", err)
	}
	s.waitRunning("md-a", 3)
}

// checkMachine verifies one Running Machine end to end: labels and ownership, phases,
// providerID, its VM and VMI, and its Node in the tenant (and only there).
func (s *sim) checkMachine(m *clusterv1.Machine, ms *clusterv1.MachineSet, phases []string) {
	t := s.t
	t.Helper()
	for k, v := range map[string]string{clusterv1.ClusterNameLabel: s.cluster, clusterv1.MachineDeploymentNameLabel: "md-a", clusterv1.MachineSetNameLabel: ms.Name} {
		if m.Labels[k] != v {
			t.Errorf("machine %s label %s = %q, want %q", m.Name, k, m.Labels[k], v)
		}
	}
	if ref := metav1.GetControllerOf(m); ref == nil || ref.UID != ms.UID {
		t.Errorf("machine %s owner %+v", m.Name, ref)
	}
	if m.Spec.ClusterName != s.cluster || m.Spec.InfrastructureRef.Kind != "KubevirtMachine" || m.Spec.InfrastructureRef.Name != m.Name || m.Spec.Bootstrap.DataSecretName == nil {
		t.Errorf("machine %s spec %+v", m.Name, m.Spec)
	}
	if want := []string{"Provisioning", "Provisioned", "Running"}; !slices.Equal(trimPending(phases), want) {
		t.Errorf("machine %s phases %v, want [Pending] %v", m.Name, phases, want)
	}
	if m.Spec.ProviderID != infra.ProviderIDPrefix+m.Name || m.Status.NodeRef.Name != m.Name {
		t.Errorf("machine %s providerID %q nodeRef %q", m.Name, m.Spec.ProviderID, m.Status.NodeRef.Name)
	}
	if !meta.IsStatusConditionTrue(m.Status.Conditions, clusterv1.MachineReadyCondition) {
		t.Errorf("machine %s not Ready: %+v", m.Name, m.Status.Conditions)
	}

	// The VM CAPK built: cluster/role labels on the VM and its VMI template, resources from the
	// template, run strategy Always; its VMI runs and its launcher pod carries the labels.
	vm := &kubevirtv1.VirtualMachine{}
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: m.Name}, vm); err != nil {
		t.Fatalf("VM of machine %s: %v", m.Name, err)
	}
	for _, l := range []map[string]string{vm.Labels, vm.Spec.Template.ObjectMeta.Labels} {
		if l[infra.LabelClusterName] != s.cluster || l[infra.LabelRole] != infra.RoleWorker {
			t.Errorf("VM %s labels %v lack cluster-name/role", vm.Name, l)
		}
	}
	if rs, _ := vm.RunStrategy(); rs != kubevirtv1.RunStrategyAlways || vm.Spec.Template.Spec.Domain.CPU.Cores != templateCores {
		t.Errorf("VM %s run strategy %s cpu %+v", vm.Name, rs, vm.Spec.Template.Spec.Domain.CPU)
	}
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := s.c.Get(s.ctx, client.ObjectKeyFromObject(vm), vmi); err != nil || vmi.Status.Phase != kubevirtv1.Running {
		t.Errorf("VMI of %s: phase %s, err %v", vm.Name, vmi.Status.Phase, err)
	}
	var pods corev1.PodList
	if err := s.c.List(s.ctx, &pods, client.InNamespace(s.ns), client.MatchingLabels{
		kubevirtv1.CreatedByLabel: string(vmi.UID), infra.LabelClusterName: s.cluster, infra.LabelRole: infra.RoleWorker,
	}); err != nil || len(pods.Items) != 1 {
		t.Errorf("launcher pod of %s with cluster/role labels: %d found, err %v", vm.Name, len(pods.Items), err)
	}

	// The tenant Node: providerID, capacity from the template, Ready, untainted.
	node := &corev1.Node{}
	if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: m.Name}, node); err != nil {
		t.Fatalf("tenant node of %s: %v", m.Name, err)
	}
	if node.Spec.ProviderID != m.Spec.ProviderID || node.Labels[corev1.LabelHostname] != m.Name {
		t.Errorf("node %s providerID %q labels %v", node.Name, node.Spec.ProviderID, node.Labels)
	}
	for name, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "2", corev1.ResourceMemory: templateMemory, corev1.ResourcePods: "110"} {
		for _, rl := range []corev1.ResourceList{node.Status.Capacity, node.Status.Allocatable} {
			if q := rl[name]; q.Cmp(resource.MustParse(want)) != 0 {
				t.Errorf("node %s %s = %s, want %s", node.Name, name, q.String(), want)
			}
		}
	}
	if !nodeReady(node) || len(node.Spec.Taints) != 0 {
		t.Errorf("node %s ready=%v taints=%v", node.Name, nodeReady(node), node.Spec.Taints)
	}
	if node.Annotations[clusterv1.MachineAnnotation] != m.Name || node.Annotations[clusterv1.ClusterNameAnnotation] != s.cluster {
		t.Errorf("node %s annotations %v lack Cluster API's", node.Name, node.Annotations)
	}
	// Cross-cluster: the Node is a tenant object, absent from the management cluster.
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: m.Name}, &corev1.Node{}); err == nil {
		t.Errorf("node %s exists in the management cluster", m.Name)
	}
}

// trimPending drops the leading Pending a Machine may or may not be seen in (it lasts one
// status write when the bootstrap data secret is given).
func trimPending(p []string) []string {
	if len(p) > 0 && p[0] == "Pending" {
		return p[1:]
	}
	return p
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestScaleDownDeletesAnnotatedMachineFirst(t *testing.T) {
	s := startSim(t, Options{})
	s.create(s.newMD("md-a", 3))
	machines := s.waitRunning("md-a", 3)
	slices.SortFunc(machines, func(a, b clusterv1.Machine) int { return compare(a.Name, b.Name) })
	// Not the first by name, which the default order would pick anyway.
	victim := machines[1]
	err := s.updateMachine(victim.Name, func(m *clusterv1.Machine) {
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[clusterv1.DeleteMachineAnnotation] = "yes"
	})
	if err != nil {
		t.Fatal(err)
	}
	s.scaleTo("md-a", 2)

	s.waitGone(client.ObjectKey{Namespace: s.ns, Name: victim.Name}, &clusterv1.Machine{}, s.c)
	s.waitGone(client.ObjectKey{Namespace: s.ns, Name: victim.Name}, &kubevirtv1.VirtualMachine{}, s.c)
	s.waitGone(client.ObjectKey{Name: victim.Name}, &corev1.Node{}, s.tenant)
	left := s.waitRunning("md-a", 2)
	for _, m := range left {
		if m.Name == victim.Name {
			t.Errorf("annotated machine %s survived", victim.Name)
		}
	}
	s.consistently("exactly one machine removed", 5*testPhaseDelay, func() error {
		if n := len(s.machines("md-a")); n != 2 {
			return fmt.Errorf("%d machines", n)
		}
		return nil
	})
}

func TestScaleDownOldestFirst(t *testing.T) {
	s := startSim(t, Options{})
	md := s.newMD("md-a", 1)
	md.Spec.Deletion.Order = clusterv1.OldestMachineSetDeletionOrder
	s.create(md)
	oldest := s.waitRunning("md-a", 1)[0]
	// Creation timestamps have one-second resolution: let the next machine be born in a later
	// second, or both would tie and the order would fall back to names.
	s.eventually("a new second", func() (bool, error) {
		return time.Now().Truncate(time.Second).After(oldest.CreationTimestamp.Time), nil
	})
	s.scaleTo("md-a", 2)
	s.waitRunning("md-a", 2)
	s.scaleTo("md-a", 1)
	s.waitGone(client.ObjectKey{Namespace: s.ns, Name: oldest.Name}, &clusterv1.Machine{}, s.c)
	if left := s.waitRunning("md-a", 1); left[0].Name == oldest.Name {
		t.Errorf("oldest machine %s kept", oldest.Name)
	}
}

func (s *sim) scaleTo(md string, n int32) {
	s.t.Helper()
	obj := &clusterv1.MachineDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: md}}
	s.eventually(fmt.Sprintf("%s scaled to %d", md, n), func() (bool, error) {
		scale := &autoscalingv1.Scale{}
		if err := s.c.SubResource("scale").Get(s.ctx, obj, scale); err != nil {
			return false, err
		}
		scale.Spec.Replicas = n
		return true, s.c.SubResource("scale").Update(s.ctx, obj, client.WithSubResourceBody(scale))
	})
}

func (s *sim) updateMachine(name string, mutate func(*clusterv1.Machine)) error {
	var err error
	s.eventually("machine "+name+" updated", func() (bool, error) {
		m := &clusterv1.Machine{}
		if err = s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: name}, m); err != nil {
			return false, err
		}
		mutate(m)
		return true, s.c.Update(s.ctx, m)
	})
	return err
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
