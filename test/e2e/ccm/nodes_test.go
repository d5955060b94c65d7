package ccm

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/vmaddr"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

const (
	taintUninitialized = "node.cloudprovider.kubernetes.io/uninitialized"
	taintShutdown      = "node.cloudprovider.kubernetes.io/shutdown"
)

// worker is a tenant Node initialised by the ccm and the VM behind it.
type worker struct {
	node, vm string
}

// testNodes scales the workers to two through Cluster API and checks that the ccm initialises
// the Nodes the simulated kubelets register: taint lifted, providerID, addresses of both
// families from the VMI, instance type, zone and region of the infra node running the VM.
func testNodes(t *testing.T, s *suite) {
	s.create(t, s.mgmt, capi.NewMachineDeployment(infraNS, workers, cluster, template, 2))
	ws := s.waitWorkers(t, 2)
	for _, w := range ws {
		node := &corev1.Node{}
		if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: w.node}, node); err != nil {
			t.Fatal(err)
		}
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: w.vm}, vmi); err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, a := range vmaddr.Addresses(vmi) {
			want = append(want, a.String())
		}
		var got []string
		fams := map[bool]bool{}
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				got = append(got, a.Address)
				fams[netip.MustParseAddr(a.Address).Is6()] = true
			}
		}
		if !slices.Equal(got, want) || !fams[false] || !fams[true] {
			t.Errorf("node %s InternalIPs %v, want both families from the VMI: %v", w.node, got, want)
		}
		if l := node.Labels[corev1.LabelInstanceTypeStable]; l != instanceType {
			t.Errorf("node %s instance type %q, want %q", w.node, l, instanceType)
		}
		if z, r := node.Labels[corev1.LabelTopologyZone], node.Labels[corev1.LabelTopologyRegion]; !strings.HasPrefix(z, "zone-") || r != "region-1" {
			t.Errorf("node %s zone %q region %q", w.node, z, r)
		}
		infraNode := &corev1.Node{}
		if err := s.mgmt.Get(s.ctx, client.ObjectKey{Name: vmi.Status.NodeName}, infraNode); err != nil {
			t.Fatal(err)
		}
		if node.Labels[corev1.LabelTopologyZone] != infraNode.Labels[corev1.LabelTopologyZone] {
			t.Errorf("node %s zone %q, but its VM runs on %s in %q", w.node, node.Labels[corev1.LabelTopologyZone],
				infraNode.Name, infraNode.Labels[corev1.LabelTopologyZone])
		}
	}
}

// waitWorkers waits for n initialised worker Nodes (no uninitialized taint, providerID set,
// Ready) and returns them sorted by name.
func (s *suite) waitWorkers(t *testing.T, n int) []worker {
	t.Helper()
	var ws []worker
	s.eventually(t, fmt.Sprintf("%d initialised worker nodes", n), func() (bool, error) {
		var err error
		ws, err = s.workers()
		if err != nil {
			return false, err
		}
		return len(ws) == n, nil
	})
	return ws
}

func (s *suite) workers() ([]worker, error) {
	var nodes corev1.NodeList
	if err := s.tenant.List(s.ctx, &nodes); err != nil {
		return nil, err
	}
	var ws []worker
	for _, n := range nodes.Items {
		if !strings.HasPrefix(n.Annotations[capi.AnnotationSimVMI], infraNS+"/") || n.DeletionTimestamp != nil {
			continue
		}
		vm, err := infra.VMNameFromProviderID(n.Spec.ProviderID)
		if err != nil || hasTaint(&n, taintUninitialized) || !ready(&n) || len(n.Status.Addresses) == 0 {
			continue
		}
		ws = append(ws, worker{node: n.Name, vm: vm})
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].node < ws[j].node })
	return ws, nil
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

func ready(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
	})
}

// standaloneVM creates a running VM with CAPK's labels for clusterName in namespace, without a
// Machine (the Cluster API simulator ignores it), and waits for its VMI to run.
func (s *suite) standaloneVM(t *testing.T, namespace, name, clusterName string) *kubevirtv1.VirtualMachineInstance {
	t.Helper()
	labels := map[string]string{infra.LabelClusterName: clusterName, infra.LabelRole: infra.RoleWorker}
	vm := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: kubevirtv1.VirtualMachineSpec{
			RunStrategy: ptr.To(kubevirtv1.RunStrategyAlways),
			Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
			},
		},
	}
	s.create(t, s.mgmt, vm)
	vmi := &kubevirtv1.VirtualMachineInstance{}
	s.eventually(t, "VMI "+name+" running with addresses", func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: namespace, Name: name}, vmi); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return vmi.Status.Phase == kubevirtv1.Running && len(vmaddr.Addresses(vmi)) > 0, nil
	})
	return vmi
}

// betaVM is a running worker VM of another cluster in the tenant's own namespace, the target
// of the crafted-object attacks.
func (s *suite) betaVM(t *testing.T) *kubevirtv1.VirtualMachineInstance {
	t.Helper()
	return s.standaloneVM(t, infraNS, "beta-w1", otherCluster)
}

// testCraftedProviderID: the tenant registers Nodes that name another cluster's VM, by
// providerID and by node name. The ccm must never initialise them (the taint stays, no
// address of the foreign VM appears) and, as they are NotReady and have no VM in this
// cluster, the node lifecycle controller deletes them.
func testCraftedProviderID(t *testing.T, s *suite) {
	beta := s.betaVM(t)
	var foreign []string
	for _, a := range vmaddr.Addresses(beta) {
		foreign = append(foreign, a.String())
	}
	w, err := client.NewWithWatch(env.Tenant.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "crafted-by-id"}, Spec: corev1.NodeSpec{ProviderID: infra.ProviderID(beta.Name)}},
		{ObjectMeta: metav1.ObjectMeta{Name: beta.Name}}, // no providerID: resolved by name
	} {
		t.Run(n.Name, func(t *testing.T) {
			n.Spec.Taints = []corev1.Taint{{Key: taintUninitialized, Value: "true", Effect: corev1.TaintEffectNoSchedule}}
			watcher, err := w.Watch(s.ctx, &corev1.NodeList{}, client.MatchingFields{"metadata.name": n.Name})
			if err != nil {
				t.Fatal(err)
			}
			defer watcher.Stop()
			s.create(t, s.tenant, n)
			for ev := range watcher.ResultChan() {
				node, ok := ev.Object.(*corev1.Node)
				if !ok {
					t.Fatalf("watch: %v", ev.Object)
				}
				if !hasTaint(node, taintUninitialized) {
					t.Fatalf("crafted node %s was initialised: %+v", n.Name, node.Spec)
				}
				if node.Spec.ProviderID != n.Spec.ProviderID {
					t.Fatalf("crafted node %s got providerID %q", n.Name, node.Spec.ProviderID)
				}
				for _, a := range node.Status.Addresses {
					if slices.Contains(foreign, a.Address) {
						t.Fatalf("crafted node %s got address %s of another cluster's VM", n.Name, a.Address)
					}
				}
				if ev.Type == watch.Deleted {
					return // the lifecycle controller found no VM of this cluster
				}
			}
			t.Fatalf("watch of %s ended before the node was deleted", n.Name)
		})
	}
}

// testShutdownTaint stops a worker VM (runStrategy Halted): its kubelet goes silent, and the
// lifecycle controller, finding the VM still there but not running, adds the shutdown taint
// instead of deleting the Node. Starting the VM again lifts it.
func testShutdownTaint(t *testing.T, s *suite) {
	w := s.waitWorkers(t, 2)[0]
	setRunStrategy := func(rs kubevirtv1.VirtualMachineRunStrategy) {
		vm := &kubevirtv1.VirtualMachine{}
		s.eventually(t, "run strategy "+string(rs), func() (bool, error) {
			if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: w.vm}, vm); err != nil {
				return false, err
			}
			vm.Spec.RunStrategy = ptr.To(rs)
			return true, s.mgmt.Update(s.ctx, vm)
		})
	}
	setRunStrategy(kubevirtv1.RunStrategyHalted)
	node := &corev1.Node{}
	s.eventually(t, "shutdown taint on "+w.node, func() (bool, error) {
		if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: w.node}, node); err != nil {
			return false, err
		}
		return hasTaint(node, taintShutdown), nil
	})
	setRunStrategy(kubevirtv1.RunStrategyAlways)
	s.eventually(t, "shutdown taint lifted from "+w.node, func() (bool, error) {
		if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: w.node}, node); err != nil {
			return false, err
		}
		return ready(node) && !hasTaint(node, taintShutdown), nil
	})
	s.waitWorkers(t, 2)
}

// testVMDeletedNodeDeleted: a NotReady Node whose VM is deleted is deleted by the ccm; while the
// VM exists (even though the Node is NotReady) it is initialised and kept.
func testVMDeletedNodeDeleted(t *testing.T, s *suite) {
	const name = "alpha-standalone"
	s.standaloneVM(t, infraNS, name, cluster)
	s.create(t, s.tenant, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.NodeSpec{ProviderID: infra.ProviderID(name), Taints: []corev1.Taint{
			{Key: taintUninitialized, Value: "true", Effect: corev1.TaintEffectNoSchedule},
		}},
	})
	node := &corev1.Node{}
	s.eventually(t, "node "+name+" initialised although NotReady", func() (bool, error) {
		if err := s.tenant.Get(s.ctx, client.ObjectKey{Name: name}, node); err != nil {
			return false, err
		}
		return !hasTaint(node, taintUninitialized) && len(node.Status.Addresses) > 0, nil
	})
	vm := &kubevirtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: name}}
	if err := s.mgmt.Delete(s.ctx, vm); err != nil {
		t.Fatal(err)
	}
	s.eventually(t, "node "+name+" deleted after its VM", func() (bool, error) {
		err := s.tenant.Get(s.ctx, client.ObjectKey{Name: name}, node)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// machineOf returns the Machine whose nodeRef is node, once Cluster API has set it.
func (s *suite) machineOf(t *testing.T, node string) *clusterv1.Machine {
	t.Helper()
	var m *clusterv1.Machine
	s.eventually(t, "the Machine of node "+node, func() (bool, error) {
		var ms clusterv1.MachineList
		if err := s.mgmt.List(s.ctx, &ms, client.InNamespace(infraNS)); err != nil {
			return false, err
		}
		for i := range ms.Items {
			if ms.Items[i].Status.NodeRef.Name == node {
				m = &ms.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	return m
}

// scaleWorkers sets the workers' replica count.
func (s *suite) scaleWorkers(t *testing.T, n int32) {
	t.Helper()
	md := &clusterv1.MachineDeployment{}
	s.eventually(t, fmt.Sprintf("workers scaled to %d", n), func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: workers}, md); err != nil {
			return false, err
		}
		md.Spec.Replicas = ptr.To(n)
		return true, s.mgmt.Update(s.ctx, md)
	})
}
