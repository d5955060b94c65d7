package loadbalancer

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/vmaddr"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// resolver maps a tenant node name to the VM behind it: Node → providerID → VM of THIS
// cluster (scoped lookup, so another cluster's VM is simply not found) → running VMI → its
// virt-launcher pod. The addresses are the VMI's that the launcher pod also has: the pod IPs
// come from the infra CNI, while VMI interface addresses can be reported by the guest agent,
// i.e. by the tenant, who could otherwise point the load balancer at any infra address.
func (b *Balancer) resolver(ctx context.Context, t *tenantView) Resolver {
	return func(nodeName string) (Target, error) {
		node, err := t.nodes.Get(nodeName)
		if apierrors.IsNotFound(err) {
			return Target{}, errors.New("no such node")
		}
		if err != nil {
			return Target{}, err
		}
		if node.Spec.ProviderID == "" {
			return Target{}, errors.New("node has no providerID yet")
		}
		vm, err := b.infra.VMForNode(ctx, node.Spec.ProviderID)
		if apierrors.IsNotFound(err) {
			return Target{}, fmt.Errorf("providerID %q names no VM of this cluster", node.Spec.ProviderID)
		}
		if err != nil {
			return Target{}, err
		}
		if vm.Labels[infra.LabelRole] != infra.RoleWorker {
			return Target{}, fmt.Errorf("VM %s is not a worker", vm.Name)
		}
		vmi, err := b.infra.VMI(ctx, vm.Name)
		if apierrors.IsNotFound(err) {
			return Target{}, fmt.Errorf("VM %s is not running", vm.Name)
		}
		if err != nil {
			return Target{}, err
		}
		if vmi.Status.Phase != kubevirtv1.Running || vmi.DeletionTimestamp != nil {
			return Target{}, fmt.Errorf("VM %s is not running (%s)", vm.Name, vmi.Status.Phase)
		}
		pod, err := b.infra.LauncherPod(ctx, vmi)
		if apierrors.IsNotFound(err) {
			return Target{}, fmt.Errorf("VM %s has no running virt-launcher pod", vm.Name)
		}
		if err != nil {
			return Target{}, err
		}
		podIPs := make([]string, len(pod.Status.PodIPs))
		for i, ip := range pod.Status.PodIPs {
			podIPs[i] = ip.IP
		}
		addrs := vmaddr.Intersect(vmaddr.Addresses(vmi), podIPs)
		if len(addrs) == 0 {
			return Target{}, fmt.Errorf("VM %s reports no address of its virt-launcher pod", vm.Name)
		}
		return Target{VM: vm.Name, InfraNode: vmi.Status.NodeName, Addrs: addrs}, nil
	}
}
