package infra

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var podResource = corev1.Resource("pods")

// LauncherPod returns the running virt-launcher pod of vmi, a VMI of this cluster. KubeVirt
// labels the pod with kubevirt.io/created-by=<VMI UID> and copies the VMI's labels (so the
// cluster-name label) onto it. The pod's IPs come from the infra CNI, not from the guest, which
// is what makes them trustworthy where VMI interface addresses (reported by the guest agent,
// so by the tenant) are not.
func (c *Client) LauncherPod(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) (*corev1.Pod, error) {
	if !c.scope.InCluster(vmi) || vmi.UID == "" {
		return nil, apierrors.NewNotFound(podResource, "virt-launcher of "+vmi.Name)
	}
	var pods corev1.PodList
	err := c.reader.List(ctx, &pods, client.InNamespace(c.scope.Namespace), client.MatchingLabels{
		LabelClusterName:          c.scope.ClusterName,
		kubevirtv1.CreatedByLabel: string(vmi.UID),
	})
	if err != nil {
		return nil, fmt.Errorf("listing virt-launcher pods of VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !c.scope.InCluster(p) || p.DeletionTimestamp != nil {
			continue
		}
		if p.Status.Phase == corev1.PodRunning && len(p.Status.PodIPs) > 0 {
			return p, nil
		}
	}
	return nil, apierrors.NewNotFound(podResource, "virt-launcher of "+vmi.Name)
}
