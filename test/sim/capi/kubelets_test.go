package capi

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fakeKubelets takes the first max VMs offered, registering their Nodes as a real kubelet
// with --provider-id would (no simulator annotation), and records what left.
type fakeKubelets struct {
	tenant client.Client
	max    int

	mu           sync.Mutex
	joined, left []string // VMI names
	nodes        map[string]string
}

func (f *fakeKubelets) Join(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, nodeName string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slices.Contains(f.joined, vmi.Name) {
		return true, nil
	}
	if len(f.joined) >= f.max {
		return false, nil
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}, Spec: corev1.NodeSpec{ProviderID: "kubevirt://" + vmi.Name}}
	if err := f.tenant.Create(ctx, n); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, err
	}
	f.joined = append(f.joined, vmi.Name)
	f.nodes[vmi.Name] = nodeName
	return true, nil
}

func (f *fakeKubelets) Leave(_ context.Context, vmi types.NamespacedName) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = append(f.left, vmi.Name)
	return nil
}

func (f *fakeKubelets) state() (joined, left []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.joined), slices.Clone(f.left)
}

// TestRealKubeletsTakeSomeWorkers: with Options.Kubelets, the workers it takes get no
// simulated Node (their real kubelet registers it) yet their Machines run like the others;
// the ones it declines get the simulated kubelet; when Cluster API deletes a taken worker, its
// real kubelet is told to leave and its Node is deleted.
func TestRealKubeletsTakeSomeWorkers(t *testing.T) {
	kubelets := &fakeKubelets{tenant: env.Tenant.Client, max: 1, nodes: map[string]string{}}
	s := startSim(t, Options{Kubelets: kubelets})
	s.create(s.newMD("md-real", 2))
	s.waitRunning("md-real", 2)

	joined, _ := kubelets.state()
	if len(joined) != 1 {
		t.Fatalf("real kubelets joined %v, want exactly 1 (the cap)", joined)
	}
	real := joined[0]
	simulated, err := s.tenantNodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(simulated) != 1 || simulated[0].Annotations[AnnotationSimVMI] == s.ns+"/"+real {
		t.Fatalf("simulated Nodes %v; want one, not for the real kubelet's VM %s", simulated, real)
	}

	s.setReplicas("md-real", 0)
	s.eventually("the real kubelet of "+real+" told to leave and its Node deleted", func() (bool, error) {
		_, left := kubelets.state()
		err := s.tenant.Get(s.ctx, client.ObjectKey{Name: kubelets.nodes[real]}, &corev1.Node{})
		return slices.Contains(left, real) && apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// TestSimulatedKubeletRenewsLease: the simulated kubelet keeps its Node's Lease in
// kube-node-lease renewed, owned by the Node, so a tenant's node lifecycle controller keeps a
// simulated Node Ready as long as its VM runs.
func TestSimulatedKubeletRenewsLease(t *testing.T) {
	s := startSim(t, Options{})
	s.create(s.newMD("md-lease", 1))
	s.waitRunning("md-lease", 1)
	nodes, err := s.tenantNodes()
	if err != nil || len(nodes) != 1 {
		t.Fatalf("simulated Nodes %v (%v), want 1", nodes, err)
	}
	n := nodes[0]
	lease := &coordinationv1.Lease{}
	var first time.Time
	s.eventually("the Lease of Node "+n.Name, func() (bool, error) {
		err := s.tenant.Get(s.ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: n.Name}, lease)
		if err == nil && lease.Spec.RenewTime != nil {
			first = lease.Spec.RenewTime.Time
		}
		return err == nil, client.IgnoreNotFound(err)
	})
	if ref := lease.OwnerReferences; len(ref) != 1 || ref[0].Kind != "Node" || ref[0].UID != n.UID ||
		lease.Spec.LeaseDurationSeconds == nil || *lease.Spec.LeaseDurationSeconds != leaseDuration {
		t.Errorf("Lease owners %v, duration %v; want the Node %s, %ds", ref, lease.Spec.LeaseDurationSeconds, n.UID, leaseDuration)
	}
	s.eventually("the Lease renewed", func() (bool, error) {
		err := s.tenant.Get(s.ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: n.Name}, lease)
		return err == nil && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(first), err
	})
}
