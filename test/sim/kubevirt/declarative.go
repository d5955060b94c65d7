package kubevirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/virtapi"
)

// Declarative volume hot-plug, as virt-controller's VM controller does it with the
// DeclarativeHotplugVolumes feature gate on and HotplugVolumes off (kubevirt/kubevirt v1.8.1
// pkg/storage/hotplug HandleDeclarativeVolumes, called from the VM sync): every pass compares
// the hotpluggable volumes of the VM template with the running VMI's spec and patches the VMI
// (a JSON patch with "test" ops on both lists, as upstream) so that it carries exactly the
// VM's. virt-handler's status walk (test/sim/hotplug) then attaches or detaches the disks.
// With the gate off (or HotplugVolumes on) such template changes are left for the next start,
// and do not set RestartRequired: hotpluggable volumes count as live-updatable.

// FaultVMHotplug is passed before the VM controller patches the VMI for declarative hot-plug.
// Stall: the VMI is left as it is. FailNext: the sync fails with reason HotPlugVolumeError
// (VM Failure condition) and is retried with the workqueue's backoff.
const FaultVMHotplug = "vm/hotplug"

// reasonHotplugVolumeError is upstream's failure reason for a failed hot-plug sync.
const reasonHotplugVolumeError = "HotPlugVolumeError"

// declarativeHotplugVolume is upstream's IsDeclarativeHotplugVolume: a PVC or DataVolume
// source marked hotpluggable.
func declarativeHotplugVolume(v *kubevirtv1.Volume) bool {
	if v == nil {
		return false
	}
	return (v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.Hotpluggable) ||
		(v.DataVolume != nil && v.DataVolume.Hotpluggable)
}

func volumesByName(vs []kubevirtv1.Volume) map[string]*kubevirtv1.Volume {
	m := make(map[string]*kubevirtv1.Volume, len(vs))
	for i := range vs {
		m[vs[i].Name] = &vs[i]
	}
	return m
}

func disksByName(ds []kubevirtv1.Disk) map[string]*kubevirtv1.Disk {
	m := make(map[string]*kubevirtv1.Disk, len(ds))
	for i := range ds {
		m[ds[i].Name] = &ds[i]
	}
	return m
}

// declarativeVMISpec returns the volumes and disks the VMI must carry for the VM's template:
// its hotpluggable volumes dropped when the VM lost or changed them, the VM's new hotpluggable
// volumes added once the VMI has no status left for them (a volume still detaching is not
// re-added yet), and the disks following their volumes. Everything else is kept as it is.
func declarativeVMISpec(tmpl *kubevirtv1.VirtualMachineInstanceSpec, vmi *kubevirtv1.VirtualMachineInstance) ([]kubevirtv1.Volume, []kubevirtv1.Disk) {
	vmVolumes, vmDisks := volumesByName(tmpl.Volumes), disksByName(tmpl.Domain.Devices.Disks)
	vmiVolumes, vmiDisks := volumesByName(vmi.Spec.Volumes), disksByName(vmi.Spec.Domain.Devices.Disks)
	withStatus := map[string]bool{}
	for _, st := range vmi.Status.VolumeStatus {
		withStatus[st.Name] = true
	}

	var volumes []kubevirtv1.Volume
	for i := range vmi.Spec.Volumes {
		v := &vmi.Spec.Volumes[i]
		if declarativeHotplugVolume(v) {
			vmv, ok := vmVolumes[v.Name]
			if !ok || (declarativeHotplugVolume(vmv) && !equality.Semantic.DeepEqual(vmv, v)) {
				continue // gone from, or changed in, the VM: unplug (a changed one comes back)
			}
		}
		volumes = append(volumes, *v.DeepCopy())
	}
	for i := range tmpl.Volumes {
		v := &tmpl.Volumes[i]
		if declarativeHotplugVolume(v) && vmiVolumes[v.Name] == nil && !withStatus[v.Name] {
			volumes = append(volumes, *v.DeepCopy())
		}
	}

	kept := volumesByName(volumes)
	var disks []kubevirtv1.Disk
	for i := range vmi.Spec.Domain.Devices.Disks {
		d := &vmi.Spec.Domain.Devices.Disks[i]
		if kept[d.Name] == nil {
			vmd, vmHasDisk := vmDisks[d.Name]
			_, vmHasVolume := vmVolumes[d.Name]
			if !vmHasDisk {
				continue // disk and volume gone
			}
			if vmHasVolume && (vmd.CDRom == nil || d.CDRom == nil) {
				continue // the volume changed; only an empty CD-ROM tray stays
			}
		}
		disks = append(disks, *d.DeepCopy())
	}
	for i := range tmpl.Domain.Devices.Disks {
		d := &tmpl.Domain.Devices.Disks[i]
		if v := kept[d.Name]; v != nil && declarativeHotplugVolume(v) && vmiDisks[d.Name] == nil {
			disks = append(disks, *d.DeepCopy())
		}
	}
	return volumes, disks
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// syncDeclarativeHotplug patches the running VMI's volumes and disks to follow the VM's
// template when the gates ask for declarative hot-plug. It reports a failed sync as upstream
// does (HotPlugVolumeError), including a refusal by the VMI update webhook.
func (r *vmReconciler) syncDeclarativeHotplug(ctx context.Context, vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance) (ctrl.Result, *syncError, error) {
	if !r.opts.Gates.Declarative() || vm.Spec.Template == nil {
		return ctrl.Result{}, nil, nil
	}
	if s := vm.Spec.UpdateVolumesStrategy; s != nil && *s == kubevirtv1.UpdateVolumesStrategyMigration {
		return ctrl.Result{}, nil, nil // volume migration owns the volumes then
	}
	if vmi == nil || !vmi.IsRunning() || vmi.DeletionTimestamp != nil {
		return ctrl.Result{}, nil, nil
	}
	volumes, disks := declarativeVMISpec(&vm.Spec.Template.Spec, vmi)
	if equality.Semantic.DeepEqual(vmi.Spec.Volumes, volumes) && equality.Semantic.DeepEqual(vmi.Spec.Domain.Devices.Disks, disks) {
		return ctrl.Result{}, nil, nil
	}
	hotplugErr := func(err error) *syncError {
		return &syncError{reasonHotplugVolumeError, fmt.Errorf("Error encountered while handling declarative hotplug volumes: %w", err)}
	}
	if r.opts.Faults.Stalled(FaultVMHotplug) {
		return ctrl.Result{RequeueAfter: r.opts.poll()}, nil, nil
	}
	if err := r.opts.Faults.Check(ctx, FaultVMHotplug); err != nil {
		var fe *fault.Error
		if errors.As(err, &fe) {
			return ctrl.Result{}, hotplugErr(err), nil
		}
		return ctrl.Result{}, nil, err
	}
	updated := vmi.Spec.DeepCopy()
	updated.Volumes, updated.Domain.Devices.Disks = volumes, disks
	if serr := virtapi.AdmitVMIHotplug(&vmi.Spec, updated); serr != nil {
		return ctrl.Result{}, hotplugErr(serr), nil
	}
	// Upstream's patch: test each list as read, then replace it (or add it when the VMI had
	// none; an absent list cannot be tested, empty lists are not serialised).
	var ops []jsonPatchOp
	set := func(path string, before, after any, present bool) {
		if present {
			ops = append(ops, jsonPatchOp{Op: "test", Path: path, Value: before}, jsonPatchOp{Op: "replace", Path: path, Value: after})
		} else {
			ops = append(ops, jsonPatchOp{Op: "add", Path: path, Value: after})
		}
	}
	set("/spec/volumes", vmi.Spec.Volumes, volumes, len(vmi.Spec.Volumes) > 0)
	set("/spec/domain/devices/disks", vmi.Spec.Domain.Devices.Disks, disks, len(vmi.Spec.Domain.Devices.Disks) > 0)
	patch, err := json.Marshal(ops)
	if err != nil {
		return ctrl.Result{}, nil, err
	}
	target := &kubevirtv1.VirtualMachineInstance{}
	target.Namespace, target.Name = vmi.Namespace, vmi.Name
	if err := r.client.Patch(ctx, target, client.RawPatch(types.JSONPatchType, patch)); err != nil {
		// A failed test (the VMI changed since it was read) lands here too, as upstream.
		return ctrl.Result{}, hotplugErr(err), nil
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Declarative hot-plug: VMI volumes follow the VM", "vmi", client.ObjectKeyFromObject(vmi),
		"volumes", len(volumes), "before", len(vmi.Spec.Volumes))
	return ctrl.Result{}, nil, nil
}
