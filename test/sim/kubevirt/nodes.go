package kubevirt

import (
	"context"
	"fmt"
	"maps"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Well-known node labels (k8s.io/api/core/v1 constants spelled out for readability).
const (
	labelZone     = corev1.LabelTopologyZone
	labelRegion   = corev1.LabelTopologyRegion
	labelHostname = corev1.LabelHostname
	// kvmResource is the device virt-handler's device plugin advertises on every KVM host.
	kvmResource corev1.ResourceName = "devices.kubevirt.io/kvm"
)

func (n InfraNode) labels() map[string]string {
	l := map[string]string{
		labelHostname:          n.Name,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: "amd64",
		LabelSchedulable:       "true",
	}
	if n.Zone != "" {
		l[labelZone] = n.Zone
	}
	if n.Region != "" {
		l[labelRegion] = n.Region
	}
	maps.Copy(l, n.Labels)
	return l
}

func (n InfraNode) capacity() corev1.ResourceList {
	if len(n.Capacity) > 0 {
		return n.Capacity.DeepCopy()
	}
	return corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("128Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
		kvmResource:           resource.MustParse("1k"),
	}
}

// ensureInfraNode creates (or brings back in line) one infra Node as a kubelet plus the node
// lifecycle controller would leave it: labelled, Ready, with capacity, and without the
// not-ready taint the TaintNodesByCondition admission plugin adds at creation. Nothing here
// runs a node lifecycle controller, so lifting that taint falls to us.
func ensureInfraNode(ctx context.Context, c client.Client, reader client.Reader, n InfraNode, ip string) error {
	node := &corev1.Node{}
	err := reader.Get(ctx, types.NamespacedName{Name: n.Name}, node)
	switch {
	case apierrors.IsNotFound(err):
		node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.labels()}}
		if err := c.Create(ctx, node); err != nil {
			return fmt.Errorf("creating infra node %s: %w", n.Name, err)
		}
	case err != nil:
		return fmt.Errorf("reading infra node %s: %w", n.Name, err)
	default:
		maps.Copy(node.Labels, n.labels())
		if err := c.Update(ctx, node); err != nil {
			return fmt.Errorf("labelling infra node %s: %w", n.Name, err)
		}
	}

	now := metav1.Now()
	node.Status.Capacity = n.capacity()
	node.Status.Allocatable = n.capacity()
	node.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
	}
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: ip},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	node.Status.NodeInfo = corev1.NodeSystemInfo{
		OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "v1.36.2",
		OSImage: "simulated infra host", ContainerRuntimeVersion: "containerd://2.1.0",
	}
	if err := c.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("marking infra node %s Ready: %w", n.Name, err)
	}
	if untaint(node, corev1.TaintNodeNotReady) {
		if err := c.Update(ctx, node); err != nil {
			return fmt.Errorf("lifting not-ready taint from infra node %s: %w", n.Name, err)
		}
	}
	return nil
}

// untaint removes every taint with key from node and reports whether it removed any.
func untaint(node *corev1.Node, key string) bool {
	kept := node.Spec.Taints[:0]
	for _, t := range node.Spec.Taints {
		if t.Key != key {
			kept = append(kept, t)
		}
	}
	removed := len(kept) != len(node.Spec.Taints)
	node.Spec.Taints = kept
	return removed
}

// The kubelet's node Lease: renewed every 10 s, valid for 40 s (its defaults). A management
// cluster running the real node lifecycle controller (test/harness/install's
// ManagementControllers, for a real management node) marks a Node whose Lease lapses Unknown
// and taints it unreachable; the simulated infra hosts would then stop taking VMs ≈50 s after
// the simulator started.
const (
	infraLeaseRenew    = 10 * time.Second
	infraLeaseDuration = int32(40)
)

// renewInfraLeases renews the Lease of every infra Node in kube-node-lease, as their kubelets
// would, until ctx ends. Reads go to the API (reader): no Lease informer for this.
func renewInfraLeases(ctx context.Context, c client.Client, reader client.Reader, nodes []InfraNode) error {
	tick := time.NewTicker(infraLeaseRenew)
	defer tick.Stop()
	for {
		for _, n := range nodes {
			if err := renewInfraLease(ctx, c, reader, n.Name); err != nil && ctx.Err() == nil {
				ctrl.LoggerFrom(ctx).Error(err, "Renewing infra node Lease", "node", n.Name)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// renewInfraLease creates or renews one infra Node's Lease, owned by the Node.
func renewInfraLease(ctx context.Context, c client.Client, reader client.Reader, name string) error {
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{}
	err := reader.Get(ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: name}, lease)
	if apierrors.IsNotFound(err) {
		node := &corev1.Node{}
		if err := reader.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
			return fmt.Errorf("reading infra node %s: %w", name, err)
		}
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: name,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: node.UID}}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: ptrTo(infraLeaseDuration), RenewTime: &now},
		}
		if err := c.Create(ctx, lease); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the Lease of infra node %s: %w", name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the Lease of infra node %s: %w", name, err)
	}
	lease.Spec.RenewTime = &now
	if err := c.Update(ctx, lease); err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("renewing the Lease of infra node %s: %w", name, err)
	}
	return nil
}
