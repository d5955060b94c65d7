package virtapi

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The four write flows. Each validates against the objects as read, passes its fault point
// once, then writes with conflict retries, re-validating on every attempt because a concurrent
// writer may have changed the answer.
//
// Upstream (HotplugVolumes gate) queues a VM-level request in vm.status.volumeRequests and
// virt-controller then applies it to the VM template and, through the VMI subresource, to a
// running VMI. The sim applies both synchronously: the end state is the same, only the
// intermediate volumeRequests entry is never visible.

const vmiVMIDisksField = "spec.domain.devices.disks"
const vmDisksField = "spec.template.spec.domain.devices.disks"

var vmResource, vmiResource = kubevirtv1.Resource("virtualmachine"), kubevirtv1.Resource("virtualmachineinstance")

// rejected carries a refusal out of retry.RetryOnConflict without being retried: it hides the
// StatusError (no Unwrap) so a 409 refusal is not mistaken for a write conflict.
type rejected struct{ status *apierrors.StatusError }

func (r *rejected) Error() string { return r.status.Error() }

// finish converts what a retry loop returned into the handler's answer.
func finish(err error, what string) *apierrors.StatusError {
	var rej *rejected
	switch {
	case err == nil:
		return nil
	case errors.As(err, &rej):
		return rej.status
	default:
		return apierrors.NewInternalError(fmt.Errorf("unable to %s: %w", what, err))
	}
}

func (s *Server) getVM(ctx context.Context, namespace, name string) (*kubevirtv1.VirtualMachine, *apierrors.StatusError) {
	vm := &kubevirtv1.VirtualMachine{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, vm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, apierrors.NewNotFound(vmResource, name)
		}
		return nil, apierrors.NewInternalError(fmt.Errorf("unable to retrieve vm [%s]: %w", name, err))
	}
	return vm, nil
}

// getVMI returns the VMI, or nil without error when it does not exist.
func (s *Server) getVMI(ctx context.Context, namespace, name string) (*kubevirtv1.VirtualMachineInstance, *apierrors.StatusError) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, apierrors.NewInternalError(fmt.Errorf("unable to retrieve vmi [%s]: %w", name, err))
	}
	return vmi, nil
}

// liveVMI is a VMI a VM-level change must follow: present, not going away, not finished.
func liveVMI(vmi *kubevirtv1.VirtualMachineInstance) bool {
	return vmi != nil && vmi.DeletionTimestamp == nil && !vmi.IsFinal()
}

// validateVMAdd is what upstream's handler and VM webhook refuse for a VM-level add. With
// ephemeral (HotplugVolumes) the request is a vm.status.volumeRequests entry, checked by the
// status webhook against the hot-plug rules and the running VMI; otherwise (declarative) it is
// a patch of the VM spec, checked by the VM webhook as any template (a bad bus is only refused
// later, when the VM controller writes the VMI: AdmitVMIHotplug).
func validateVMAdd(vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance, opts *kubevirtv1.AddVolumeOptions, ephemeral bool) *apierrors.StatusError {
	var spec kubevirtv1.VirtualMachineInstanceSpec
	if vm.Spec.Template != nil {
		spec = *vm.Spec.Template.Spec.DeepCopy()
	}
	if err := verifyAdd(spec.Volumes, opts); err != nil {
		return apierrors.NewConflict(vmResource, vm.Name, err)
	}
	webhook := vmSpecWebhook
	if ephemeral {
		webhook = vmWebhook
		if c := hotplugDiskCauses(opts.Disk, opts.Name, "AddVolume request"); c != nil {
			return admissionDenied(webhook, c)
		}
	}
	if c := sourceCauses(opts); c != nil {
		return admissionDenied(webhook, c)
	}
	if ephemeral && liveVMI(vmi) {
		if c := vmiConflictCauses(vmi.Spec.Volumes, opts); c != nil {
			return admissionDenied(webhook, c)
		}
	}
	applyAdd(&spec, opts)
	if c := serialCauses(spec.Domain.Devices.Disks, vmDisksField); c != nil {
		return admissionDenied(webhook, c)
	}
	return nil
}

func (s *Server) addToVM(ctx context.Context, namespace, name string, opts *kubevirtv1.AddVolumeOptions) *apierrors.StatusError {
	vm, serr := s.getVM(ctx, namespace, name)
	if serr != nil {
		return serr
	}
	vmi, serr := s.getVMI(ctx, namespace, name)
	if serr != nil {
		return serr
	}
	ephemeral := s.gates.Ephemeral()
	if serr := validateVMAdd(vm, vmi, opts, ephemeral); serr != nil {
		return serr
	}
	if err := s.faults.Wait(ctx, FaultAddVolume); err != nil {
		return faultStatus(err, "patch vm")
	}
	if dryRun(opts.DryRun) {
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vm, serr := s.getVM(ctx, namespace, name)
		if serr != nil {
			return &rejected{serr}
		}
		vmi, serr := s.getVMI(ctx, namespace, name)
		if serr != nil {
			return &rejected{serr}
		}
		if serr := validateVMAdd(vm, vmi, opts, ephemeral); serr != nil {
			return &rejected{serr}
		}
		if vm.Spec.Template == nil {
			vm.Spec.Template = &kubevirtv1.VirtualMachineInstanceTemplateSpec{}
		}
		applyAdd(&vm.Spec.Template.Spec, opts)
		return s.client.Update(ctx, vm)
	})
	if serr := finish(err, "patch vm"); serr != nil || !ephemeral {
		return serr // declarative: the VM controller carries the spec into the VMI
	}
	return finish(s.updateVMI(ctx, namespace, name, false, func(vmi *kubevirtv1.VirtualMachineInstance) (bool, error) {
		n := len(vmi.Spec.Volumes)
		applyAdd(&vmi.Spec, opts)
		return len(vmi.Spec.Volumes) != n, nil
	}), "add volume to vmi")
}

// updateVMI applies change to the VMI with conflict retries; change reports whether it changed
// anything, or refuses with a *rejected. With mustRun the VMI must exist and run (VMI-level
// requests); otherwise a missing or finished VMI is skipped.
func (s *Server) updateVMI(ctx context.Context, namespace, name string, mustRun bool, change func(*kubevirtv1.VirtualMachineInstance) (bool, error)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vmi, serr := s.getVMI(ctx, namespace, name)
		if serr != nil {
			return &rejected{serr}
		}
		if mustRun {
			if serr := runningVMI(vmi, name); serr != nil {
				return &rejected{serr}
			}
		} else if !liveVMI(vmi) {
			return nil
		}
		changed, err := change(vmi)
		if err != nil || !changed {
			return err
		}
		// The VMI CRD has no status subresource: Update writes the whole object, so a
		// concurrent status writer shows up here as a conflict and we retry on fresh data.
		return s.client.Update(ctx, vmi)
	})
}

func runningVMI(vmi *kubevirtv1.VirtualMachineInstance, name string) *apierrors.StatusError {
	if vmi == nil {
		return apierrors.NewNotFound(vmiResource, name)
	}
	if !vmi.IsRunning() {
		return apierrors.NewConflict(vmiResource, name, errors.New("VMI is not running"))
	}
	return nil
}

// validateVMIAdd is what upstream's handler and VMI update webhook refuse for a VMI-level add.
func validateVMIAdd(vmi *kubevirtv1.VirtualMachineInstance, name string, opts *kubevirtv1.AddVolumeOptions) *apierrors.StatusError {
	if serr := runningVMI(vmi, name); serr != nil {
		return serr
	}
	if err := verifyAdd(vmi.Spec.Volumes, opts); err != nil {
		return apierrors.NewConflict(vmiResource, name, err)
	}
	if c := hotplugDiskCauses(opts.Disk, opts.Name, "Hotplug configuration"); c != nil {
		return admissionDenied(vmiWebhook, c)
	}
	if c := sourceCauses(opts); c != nil {
		return admissionDenied(vmiWebhook, c)
	}
	spec := vmi.Spec.DeepCopy()
	applyAdd(spec, opts)
	if c := serialCauses(spec.Domain.Devices.Disks, vmiVMIDisksField); c != nil {
		return admissionDenied(vmiWebhook, c)
	}
	return nil
}

// ephemeralRefused is upstream's refusal of a VMI-level request on a VM-owned VMI without
// the HotplugVolumes gate: with declarative hot-plug the VM spec is the only way in.
func (s *Server) ephemeralRefused(vmi *kubevirtv1.VirtualMachineInstance) *apierrors.StatusError {
	if vmi == nil || s.gates.Ephemeral() {
		return nil
	}
	if owner := metav1.GetControllerOf(vmi); owner != nil && owner.Kind == "VirtualMachine" && owner.APIVersion == kubevirtv1.SchemeGroupVersion.String() {
		return apierrors.NewBadRequest(fmt.Sprintf("VMI %s/%s is owned by a VM", vmi.Namespace, vmi.Name))
	}
	return nil
}

func (s *Server) addToVMI(ctx context.Context, namespace, name string, opts *kubevirtv1.AddVolumeOptions) *apierrors.StatusError {
	vmi, serr := s.getVMI(ctx, namespace, name)
	if serr != nil {
		return serr
	}
	if serr := s.ephemeralRefused(vmi); serr != nil {
		return serr
	}
	if serr := validateVMIAdd(vmi, name, opts); serr != nil {
		return serr
	}
	if err := s.faults.Wait(ctx, FaultAddVolume); err != nil {
		return faultStatus(err, "patch vmi")
	}
	if dryRun(opts.DryRun) {
		return nil
	}
	return finish(s.updateVMI(ctx, namespace, name, true, func(vmi *kubevirtv1.VirtualMachineInstance) (bool, error) {
		if serr := validateVMIAdd(vmi, name, opts); serr != nil {
			return false, &rejected{serr}
		}
		applyAdd(&vmi.Spec, opts)
		return true, nil
	}), "patch vmi")
}

func (s *Server) removeFromVM(ctx context.Context, namespace, name string, opts *kubevirtv1.RemoveVolumeOptions) *apierrors.StatusError {
	vm, serr := s.getVM(ctx, namespace, name)
	if serr != nil {
		return serr
	}
	if err := verifyRemove(templateVolumes(vm), opts.Name); err != nil {
		return apierrors.NewConflict(vmResource, name, err)
	}
	if err := s.faults.Wait(ctx, FaultRemoveVolume); err != nil {
		return faultStatus(err, "patch vm")
	}
	if dryRun(opts.DryRun) {
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vm, serr := s.getVM(ctx, namespace, name)
		if serr != nil {
			return &rejected{serr}
		}
		if err := verifyRemove(templateVolumes(vm), opts.Name); err != nil {
			return &rejected{apierrors.NewConflict(vmResource, name, err)}
		}
		applyRemove(&vm.Spec.Template.Spec, opts.Name)
		return s.client.Update(ctx, vm)
	})
	if serr := finish(err, "patch vm"); serr != nil || !s.gates.Ephemeral() {
		return serr // declarative: the VM controller carries the spec into the VMI
	}
	return finish(s.updateVMI(ctx, namespace, name, false, func(vmi *kubevirtv1.VirtualMachineInstance) (bool, error) {
		return applyRemove(&vmi.Spec, opts.Name), nil
	}), "remove volume from vmi")
}

func (s *Server) removeFromVMI(ctx context.Context, namespace, name string, opts *kubevirtv1.RemoveVolumeOptions) *apierrors.StatusError {
	vmi, serr := s.getVMI(ctx, namespace, name)
	if serr != nil {
		return serr
	}
	if serr := s.ephemeralRefused(vmi); serr != nil {
		return serr
	}
	if serr := runningVMI(vmi, name); serr != nil {
		return serr
	}
	if err := verifyRemove(vmi.Spec.Volumes, opts.Name); err != nil {
		return apierrors.NewConflict(vmiResource, name, err)
	}
	if err := s.faults.Wait(ctx, FaultRemoveVolume); err != nil {
		return faultStatus(err, "patch vmi")
	}
	if dryRun(opts.DryRun) {
		return nil
	}
	return finish(s.updateVMI(ctx, namespace, name, true, func(vmi *kubevirtv1.VirtualMachineInstance) (bool, error) {
		if err := verifyRemove(vmi.Spec.Volumes, opts.Name); err != nil {
			return false, &rejected{apierrors.NewConflict(vmiResource, name, err)}
		}
		return applyRemove(&vmi.Spec, opts.Name), nil
	}), "patch vmi")
}

func templateVolumes(vm *kubevirtv1.VirtualMachine) []kubevirtv1.Volume {
	if vm.Spec.Template == nil {
		return nil
	}
	return vm.Spec.Template.Spec.Volumes
}
