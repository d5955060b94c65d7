package kubevirt

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
