package node

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/vmaddr"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// WorkerVM creates a running worker VM of cluster in namespace as CAPK would (cluster-name and
// role labels on the VM and its VMI), without a Machine (the Cluster API simulator leaves it
// alone, so no simulated kubelet registers a Node for it), and returns its IPv4 address once
// its VMI runs: the address a real node for it uses.
func WorkerVM(ctx context.Context, env *harness.Env, namespace, cluster, name string) (netip.Addr, error) {
	labels := map[string]string{infra.LabelClusterName: cluster, infra.LabelRole: infra.RoleWorker}
	vm := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: kubevirtv1.VirtualMachineSpec{
			RunStrategy: ptr.To(kubevirtv1.RunStrategyAlways),
			Template:    &kubevirtv1.VirtualMachineInstanceTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}},
		},
	}
	if err := env.Management.Client.Create(ctx, vm); err != nil {
		return netip.Addr{}, fmt.Errorf("creating VM %s/%s: %w", namespace, name, err)
	}
	var addr netip.Addr
	err := harness.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, vmi); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if vmi.Status.Phase != kubevirtv1.Running {
			return false, nil
		}
		i := slices.IndexFunc(vmaddr.Addresses(vmi), netip.Addr.Is4)
		if i < 0 {
			return false, nil
		}
		addr = vmaddr.Addresses(vmi)[i]
		return true, nil
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("VMI %s/%s running with an IPv4 address: %w", namespace, name, err)
	}
	return addr, nil
}

// Ready reports whether the Node is Ready and initialised by the cloud controller manager (no
// uninitialized taint left).
func Ready(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == "node.cloudprovider.kubernetes.io/uninitialized" {
			return false
		}
	}
	return slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
	})
}
