package controller

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/grpcerr"
)

// Declarative hot-plug (config storage.hotplug: declarative). Instead of asking virt-api,
// csi-controller edits the VM's spec.template.spec itself, adding or removing exactly the
// volume and disk the subresource path would (same name, source, serial and bus, so either
// mode unplugs what the other plugged), and KubeVirt's VM controller hot-plugs the difference
// into the running VMI. The VMI's volumeStatus is then waited for as in subresource mode.
//
// Differences from the subresource path, read from kubevirt/kubevirt v1.8.1 (virt-controller
// pkg/storage/hotplug HandleDeclarativeVolumes, pkg/virt-api/rest/volumes.go):
//   - KubeVirt acts on a VM spec change only with DeclarativeHotplugVolumes on AND
//     HotplugVolumes off; otherwise the change is accepted and ignored until the VM restarts
//     (no RestartRequired condition either: hotpluggable volumes count as live-updatable).
//     A publish then waits for a disk that never comes; its DEADLINE_EXCEEDED says so.
//   - No VMI-level call exists: a volume the VMI carries but the VM does not is removed by
//     KubeVirt itself (it drops hotpluggable VMI volumes missing from the VM spec).
//   - Concurrency is ours to handle: the patch is guarded by the resourceVersion read
//     (pkg/infra), and a 409 is retried on the cache's newer VM.

// declarative reports whether volumes are hot-plugged by editing the VM spec.
func (s *Server) declarative() bool { return s.opts.Storage.Hotplug == config.HotplugDeclarative }

// ownTemplateVolume reports whether tv is the volume csi-controller adds for volume id: named
// id, with id's DataVolume (or, for adopted volumes, claim) as source, hotpluggable.
func ownTemplateVolume(tv *kubevirtv1.Volume, id string) bool {
	if tv.Name != id {
		return false
	}
	switch {
	case tv.DataVolume != nil:
		return tv.DataVolume.Name == id && tv.DataVolume.Hotpluggable
	case tv.PersistentVolumeClaim != nil:
		return tv.PersistentVolumeClaim.ClaimName == id && tv.PersistentVolumeClaim.Hotpluggable
	}
	return false
}

// templateVolume returns the volume called name in vm's template, or nil.
func templateVolume(vm *kubevirtv1.VirtualMachine, name string) *kubevirtv1.Volume {
	if vm.Spec.Template == nil {
		return nil
	}
	for i := range vm.Spec.Template.Spec.Volumes {
		if vm.Spec.Template.Spec.Volumes[i].Name == name {
			return &vm.Spec.Template.Spec.Volumes[i]
		}
	}
	return nil
}

// foreignVolume is the refusal when the VM's template has a volume called id that is not the
// one csi-controller adds: it is the VM's own (or someone else's) and is left untouched.
func foreignVolume(vmName, id string) error {
	return status.Errorf(codes.FailedPrecondition,
		"VM %s has a volume named %q that csi-controller did not add; it is left untouched", vmName, id)
}

// hotplugDeclarative adds volume v with serial to vm's template unless it is there already.
func (s *Server) hotplugDeclarative(ctx context.Context, v *volume, vm *kubevirtv1.VirtualMachine, serial string) error {
	logger := klog.FromContext(ctx)
	vol := kubevirtv1.Volume{Name: v.id, VolumeSource: kubevirtv1.VolumeSource{
		DataVolume: &kubevirtv1.DataVolumeSource{Name: v.id, Hotpluggable: true}}}
	disk := kubevirtv1.Disk{Name: v.id, Serial: serial,
		DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBus(v.bus)}}}
	for attempt := 1; ; attempt++ {
		if tv := templateVolume(vm, v.id); tv != nil {
			if !ownTemplateVolume(tv, v.id) {
				return foreignVolume(vm.Name, v.id)
			}
			return nil // requested before; KubeVirt carries it into the running instance
		}
		err := s.infra.AddTemplateVolume(ctx, vm, vol, disk)
		switch {
		case err == nil:
			logger.V(2).Info("Added the volume to the VM spec (declarative hot-plug)", "serial", serial, "bus", v.bus)
			return nil
		case apierrors.IsConflict(err) && attempt < maxHotplugAttempts:
			logger.V(2).Info("VM changed since it was read; retrying on its newer version", "attempt", attempt)
			if vm, err = s.newerVM(ctx, vm); err != nil {
				return err
			}
		case grpcerr.Retryable(err) && attempt < maxHotplugAttempts:
			logger.V(2).Info("Retrying the VM spec patch", "attempt", attempt, "error", err.Error())
		default:
			return apiError(err, "volume %q: patching the spec of VM %s", v.id, vm.Name)
		}
	}
}

// unhotplugDeclarative removes volume v from vm's template if csi-controller's entry is there.
// A volume only the instance still carries needs nothing: KubeVirt removes hotpluggable VMI
// volumes the VM spec lacks.
func (s *Server) unhotplugDeclarative(ctx context.Context, v *volume, vm *kubevirtv1.VirtualMachine) error {
	logger := klog.FromContext(ctx)
	for attempt := 1; ; attempt++ {
		tv := templateVolume(vm, v.id)
		if tv == nil {
			return nil
		}
		if !ownTemplateVolume(tv, v.id) {
			return foreignVolume(vm.Name, v.id)
		}
		err := s.infra.RemoveTemplateVolume(ctx, vm, v.id)
		switch {
		case err == nil:
			logger.V(2).Info("Removed the volume from the VM spec (declarative unplug)")
			return nil
		case apierrors.IsConflict(err) && attempt < maxHotplugAttempts:
			logger.V(2).Info("VM changed since it was read; retrying on its newer version", "attempt", attempt)
			if vm, err = s.newerVM(ctx, vm); err != nil {
				return err
			}
		case apierrors.IsNotFound(err):
			return nil // the VM is gone: nothing left to unplug from
		case grpcerr.Retryable(err) && attempt < maxHotplugAttempts:
			logger.V(2).Info("Retrying the VM spec patch", "attempt", attempt, "error", err.Error())
		default:
			return apiError(err, "volume %q: patching the spec of VM %s", v.id, vm.Name)
		}
	}
}

// newerVM waits, on VM events, until the cache holds a version of vm other than the one read
// (the one a patch just lost a conflict against) and returns it.
func (s *Server) newerVM(ctx context.Context, old *kubevirtv1.VirtualMachine) (*kubevirtv1.VirtualMachine, error) {
	var vm *kubevirtv1.VirtualMachine
	err := s.notify.wait(ctx, kindVM, old.Name, func() (bool, error) {
		cur, err := s.infra.VM(ctx, old.Name)
		if err != nil {
			return false, err
		}
		vm = cur
		return cur.ResourceVersion != old.ResourceVersion, nil
	})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.NotFound, "node %q not found: the VM is gone", old.Name)
	}
	if err != nil {
		return nil, waitError(err, fmt.Sprintf("waiting for a newer version of VM %s", old.Name), "")
	}
	return vm, nil
}
