package infra

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/kubevirt"
)

// Subresources calls KubeVirt's aggregated subresource API (subresources.kubevirt.io, served
// by virt-api behind the management apiserver) for this tenant's VMs: VM-level addvolume and
// removevolume, which survive a guest reboot, and the VMI-level removevolume for a volume the
// VMI still carries after it left the VM. Every call first checks that the object it is given
// belongs to the tenant's cluster, so only VMs from Client.VM/VMI can be changed.
type Subresources struct {
	scope Scope
	kv    kubevirt.Interface
}

// NewSubresources builds the subresource client for scope against the management apiserver
// at cfg (kubevirt.io/client-go's generated clientset).
func NewSubresources(cfg *rest.Config, scope Scope) (*Subresources, error) {
	if err := scope.Validate(); err != nil {
		return nil, err
	}
	kv, err := kubevirt.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building KubeVirt client: %w", err)
	}
	return &Subresources{scope: scope, kv: kv}, nil
}

var errNotInCluster = errors.New("not a VM of this cluster")

// AddVolume hot-plugs a volume into vm (PUT .../virtualmachines/{vm}/addvolume). virt-api
// answers 202 on success; errors are the apiserver's StatusErrors (409 when the volume or its
// source is already there, 422 when a webhook refuses the disk).
func (s *Subresources) AddVolume(ctx context.Context, vm *kubevirtv1.VirtualMachine, opts *kubevirtv1.AddVolumeOptions) error {
	if !s.scope.InCluster(vm) {
		return fmt.Errorf("addvolume on VM %s/%s: %w", vm.Namespace, vm.Name, errNotInCluster)
	}
	return s.kv.KubevirtV1().VirtualMachines(s.scope.Namespace).AddVolume(ctx, vm.Name, opts)
}

// RemoveVolume unplugs volume from vm (PUT .../virtualmachines/{vm}/removevolume); 409 when
// the VM has no such hot-plugged volume.
func (s *Subresources) RemoveVolume(ctx context.Context, vm *kubevirtv1.VirtualMachine, volume string) error {
	if !s.scope.InCluster(vm) {
		return fmt.Errorf("removevolume on VM %s/%s: %w", vm.Namespace, vm.Name, errNotInCluster)
	}
	return s.kv.KubevirtV1().VirtualMachines(s.scope.Namespace).RemoveVolume(ctx, vm.Name,
		&kubevirtv1.RemoveVolumeOptions{Name: volume})
}

// AddVMIVolume hot-plugs a volume into the running instance only (PUT
// .../virtualmachineinstances/{vmi}/addvolume), for an instance that lacks a volume its VM has.
func (s *Subresources) AddVMIVolume(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, opts *kubevirtv1.AddVolumeOptions) error {
	if !s.scope.InCluster(vmi) {
		return fmt.Errorf("addvolume on VMI %s/%s: %w", vmi.Namespace, vmi.Name, errNotInCluster)
	}
	return s.kv.KubevirtV1().VirtualMachineInstances(s.scope.Namespace).AddVolume(ctx, vmi.Name, opts)
}

// RemoveVMIVolume unplugs volume from the running instance only (PUT
// .../virtualmachineinstances/{vmi}/removevolume).
func (s *Subresources) RemoveVMIVolume(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, volume string) error {
	if !s.scope.InCluster(vmi) {
		return fmt.Errorf("removevolume on VMI %s/%s: %w", vmi.Namespace, vmi.Name, errNotInCluster)
	}
	return s.kv.KubevirtV1().VirtualMachineInstances(s.scope.Namespace).RemoveVolume(ctx, vmi.Name,
		&kubevirtv1.RemoveVolumeOptions{Name: volume})
}

// Reachable reports whether the management apiserver answers /readyz. Every authenticated
// (and anonymous) user may read it through the default system:public-info-viewer role, so it
// needs no RBAC of its own.
func (s *Subresources) Reachable(ctx context.Context) error {
	body, err := s.kv.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("infra apiserver /readyz: %w", err)
	}
	if string(body) != "ok" {
		return fmt.Errorf("infra apiserver /readyz answered %q", body)
	}
	return nil
}
