package instances

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Instances implements cloudprovider.InstancesV2.
type Instances struct {
	infra *infra.Client
	// topology, when set, adds zone and region from the infra Node running the VMI. It needs
	// read access to infra Nodes, which the operator may not grant; it is optional.
	topology *infra.NodeTopology
}

var _ cloudprovider.InstancesV2 = (*Instances)(nil)

// New returns Instances for the tenant of ic; topology may be nil.
func New(ic *infra.Client, topology *infra.NodeTopology) *Instances {
	return &Instances{infra: ic, topology: topology}
}

// vmFor resolves node to its VM: by providerID when the node has one — a providerID naming
// anything but a VM of this cluster resolves to nothing, never falling back to the name — and
// by node name before the providerID is set (the cloud node controller sets it from
// InstanceMetadata).
func (i *Instances) vmFor(ctx context.Context, node *corev1.Node) (*kubevirtv1.VirtualMachine, error) {
	if node.Spec.ProviderID != "" {
		return i.infra.VMForNode(ctx, node.Spec.ProviderID)
	}
	return i.infra.VM(ctx, node.Name)
}

// InstanceExists reports whether the node's VM exists in this cluster. A stopped VM still
// exists: only a deleted VM makes the node lifecycle controller delete the Node.
func (i *Instances) InstanceExists(ctx context.Context, node *corev1.Node) (bool, error) {
	_, err := i.vmFor(ctx, node)
	if apierrors.IsNotFound(err) {
		klog.FromContext(ctx).V(2).Info("Node has no VM in this cluster", "node", klog.KObj(node), "providerID", node.Spec.ProviderID)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// InstanceShutdown reports whether the node's VM is stopped: it has no VMI, or its VMI is not
// Running (stopping, stopped, failed, not yet started).
func (i *Instances) InstanceShutdown(ctx context.Context, node *corev1.Node) (bool, error) {
	vm, err := i.vmFor(ctx, node)
	if err != nil {
		return false, err
	}
	vmi, err := i.infra.VMI(ctx, vm.Name)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return vmi.Status.Phase != kubevirtv1.Running || vmi.DeletionTimestamp != nil, nil
}

// InstanceMetadata returns the providerID kubevirt://<vm>, the instance type, the VMI's
// addresses and, if enabled, zone and region. A node whose VM is not in this cluster gets an
// error, so the cloud node controller never initialises it.
func (i *Instances) InstanceMetadata(ctx context.Context, node *corev1.Node) (*cloudprovider.InstanceMetadata, error) {
	vm, err := i.vmFor(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node.Name, err)
	}
	md := &cloudprovider.InstanceMetadata{
		ProviderID:   infra.ProviderID(vm.Name),
		InstanceType: InstanceType(vm),
	}
	vmi, err := i.infra.VMI(ctx, vm.Name)
	switch {
	case apierrors.IsNotFound(err):
		return md, nil // stopped: no addresses to report
	case err != nil:
		return nil, fmt.Errorf("node %s: %w", node.Name, err)
	}
	md.NodeAddresses = NodeAddresses(vmi)
	if i.topology != nil && vmi.Status.NodeName != "" {
		zone, region, err := i.topology.ZoneRegion(ctx, vmi.Status.NodeName)
		if err != nil {
			return nil, fmt.Errorf("node %s: zone of VM %s: %w", node.Name, vm.Name, err)
		}
		md.Zone, md.Region = zone, region
	}
	return md, nil
}
