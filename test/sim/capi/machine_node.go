package capi

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// nodeByProviderID finds the tenant Node whose spec.providerID equals providerID byte for byte,
// as Cluster API's getNode does; more than one is an error.
func nodeByProviderID(ctx context.Context, tenant client.Reader, providerID string) (*corev1.Node, error) {
	var nodes corev1.NodeList
	if err := tenant.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing tenant nodes: %w", err)
	}
	var found *corev1.Node
	for i := range nodes.Items {
		if nodes.Items[i].Spec.ProviderID == providerID {
			if found != nil {
				return nil, fmt.Errorf("more than one tenant Node has providerID %s", providerID)
			}
			found = &nodes.Items[i]
		}
	}
	return found, nil
}

// reconcileNode finds the Machine's Node in the tenant cluster and syncs onto it what Cluster
// API does: the cluster/machine/owner annotations, the labels it manages, and the removal of
// the node.cluster.x-k8s.io/uninitialized taint the bootstrap provider registered it with.
func (r *machineReconciler) reconcileNode(ctx context.Context, m *clusterv1.Machine) (*corev1.Node, error) {
	node, err := nodeByProviderID(ctx, r.opts.Tenant, m.Spec.ProviderID)
	if err != nil || node == nil {
		return nil, err
	}
	wantAnn := map[string]string{
		clusterv1.ClusterNameAnnotation:      m.Spec.ClusterName,
		clusterv1.ClusterNamespaceAnnotation: m.Namespace,
		clusterv1.MachineAnnotation:          m.Name,
	}
	if owner := metav1.GetControllerOf(m); owner != nil {
		wantAnn[clusterv1.OwnerKindAnnotation] = owner.Kind
		wantAnn[clusterv1.OwnerNameAnnotation] = owner.Name
	}
	wantLabels := managedLabels(m.Labels)
	keys := make([]string, 0, len(wantLabels))
	for k := range wantLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	wantAnn[clusterv1.LabelsFromMachineAnnotation] = strings.Join(keys, ",")

	err = simmgr.Update(ctx, r.opts.Tenant, r.opts.Tenant, node, false, func(n *corev1.Node) bool {
		changed := false
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		for k, v := range wantAnn {
			if n.Annotations[k] != v {
				n.Annotations[k], changed = v, true
			}
		}
		for k, v := range wantLabels {
			if n.Labels[k] != v {
				n.Labels[k], changed = v, true
			}
		}
		return removeTaint(n, clusterv1.NodeUninitializedTaint.Key) || changed
	})
	if err != nil {
		return nil, fmt.Errorf("syncing tenant node %s of Machine %s/%s: %w", node.Name, m.Namespace, m.Name, err)
	}
	return node, nil
}

// managedLabels are the Machine labels Cluster API propagates to the Node.
func managedLabels(machineLabels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range machineLabels {
		domain, _, _ := strings.Cut(k, "/")
		switch {
		case strings.HasPrefix(k, clusterv1.NodeRoleLabelPrefix+"/"),
			domain == clusterv1.NodeRestrictionLabelDomain || strings.HasSuffix(domain, "."+clusterv1.NodeRestrictionLabelDomain),
			domain == clusterv1.ManagedNodeLabelDomain || strings.HasSuffix(domain, "."+clusterv1.ManagedNodeLabelDomain):
			out[k] = v
		}
	}
	return out
}

// removeTaint drops every taint with key and reports whether there was one.
func removeTaint(n *corev1.Node, key string) bool {
	kept := n.Spec.Taints[:0]
	for _, t := range n.Spec.Taints {
		if t.Key != key {
			kept = append(kept, t)
		}
	}
	removed := len(kept) != len(n.Spec.Taints)
	n.Spec.Taints = kept
	return removed
}
