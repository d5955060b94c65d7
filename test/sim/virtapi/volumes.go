package virtapi

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// Pure request logic, mirroring kubevirt/kubevirt v1.8 pkg/virt-api/rest/volumes.go (handler
// checks, verifyVolumeOption), pkg/controller ApplyVolumeRequestOnVMISpec (the spec change) and
// the admission webhooks that validate the resulting VM/VMI (pkg/storage/admitters). Messages
// are upstream's, so callers matching on them behave as against a real cluster.

// Webhooks whose refusals the sim reproduces. Upstream (HotplugVolumes gate) a VM-level request
// is a patch of vm.status.volumeRequests, validated by the CRD status webhook; a VMI-level one
// is a patch of the VMI spec, validated by the VMI update webhook.
const (
	vmWebhook  = "kubevirt-crd-status-validator.kubevirt.io"
	vmiWebhook = "virtualmachineinstances-update-validator.kubevirt.io"
	// vmSpecWebhook validates VM spec writes: virt-api's VM-level request without the
	// HotplugVolumes gate (declarative) patches the spec instead of the status.
	vmSpecWebhook = "virtualmachine-validator.kubevirt.io"
)

// AdmitVMIHotplug is the VMI update webhook's check of the volumes a VMI spec write hot-plugs
// (upstream's AdmitHotplugStorage for volumes new to the VMI): a PVC or DataVolume source and
// a disk of the same name on the scsi or virtio bus. The simulated VM controller runs it on the
// VMI patch it makes for declarative hot-plug, as kube-apiserver would call the webhook.
func AdmitVMIHotplug(old, updated *kubevirtv1.VirtualMachineInstanceSpec) *apierrors.StatusError {
	had := map[string]bool{}
	for _, v := range old.Volumes {
		had[v.Name] = true
	}
	disks := map[string]*kubevirtv1.Disk{}
	for i := range updated.Domain.Devices.Disks {
		disks[updated.Domain.Devices.Disks[i].Name] = &updated.Domain.Devices.Disks[i]
	}
	for _, v := range updated.Volumes {
		if had[v.Name] || !hotpluggable(v) {
			continue
		}
		d, ok := disks[v.Name]
		if !ok {
			return admissionDenied(vmiWebhook, []metav1.StatusCause{{Type: metav1.CauseTypeFieldValueInvalid,
				Message: fmt.Sprintf("disk %s does not exist", v.Name)}})
		}
		if c := hotplugDiskCauses(d, v.Name, "Hotplug configuration"); c != nil {
			return admissionDenied(vmiWebhook, c)
		}
	}
	return nil
}

// checkAddOptions makes the handler's own checks and normalises opts as upstream does: the disk
// takes the volume's name and the source becomes hotpluggable.
func checkAddOptions(opts *kubevirtv1.AddVolumeOptions) *apierrors.StatusError {
	switch {
	case opts.Name == "":
		return apierrors.NewBadRequest("AddVolumeOptions requires name to be set")
	case opts.Disk == nil:
		return apierrors.NewBadRequest("AddVolumeOptions requires disk to not be nil")
	case opts.VolumeSource == nil:
		return apierrors.NewBadRequest("AddVolumeOptions requires VolumeSource to not be nil")
	}
	opts.Disk.Name = opts.Name
	if opts.VolumeSource.DataVolume != nil {
		opts.VolumeSource.DataVolume.Hotpluggable = true
	} else if opts.VolumeSource.PersistentVolumeClaim != nil {
		opts.VolumeSource.PersistentVolumeClaim.Hotpluggable = true
	}
	return nil
}

func checkRemoveOptions(opts *kubevirtv1.RemoveVolumeOptions) *apierrors.StatusError {
	if opts.Name == "" {
		return apierrors.NewBadRequest("RemoveVolumeOptions requires name to be set")
	}
	return nil
}

// sourceName is the claim (or DataVolume, which names its claim) a hotplug source refers to.
func sourceName(src *kubevirtv1.HotplugVolumeSource) string {
	switch {
	case src.DataVolume != nil:
		return src.DataVolume.Name
	case src.PersistentVolumeClaim != nil:
		return src.PersistentVolumeClaim.ClaimName
	}
	return ""
}

func volumeSourceIs(v kubevirtv1.Volume, name string) bool {
	return (v.DataVolume != nil && v.DataVolume.Name == name) ||
		(v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == name)
}

func hotpluggable(v kubevirtv1.Volume) bool {
	return (v.DataVolume != nil && v.DataVolume.Hotpluggable) ||
		(v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.Hotpluggable)
}

// verifyAdd refuses a volume whose name or source is already in volumes; upstream answers
// 409 Conflict with these messages.
func verifyAdd(volumes []kubevirtv1.Volume, opts *kubevirtv1.AddVolumeOptions) error {
	src := sourceName(opts.VolumeSource)
	for _, v := range volumes {
		if v.Name == opts.Name {
			return fmt.Errorf("Unable to add volume [%s] because volume with that name already exists", opts.Name)
		}
		if volumeSourceIs(v, src) {
			return fmt.Errorf("Unable to add volume source [%s] because it already exists", src)
		}
	}
	return nil
}

// verifyRemove refuses removing a volume that is not there or was not hot-plugged (409).
// Like upstream, a volume is found by its name or by its claim/DataVolume name.
func verifyRemove(volumes []kubevirtv1.Volume, name string) error {
	for _, v := range volumes {
		if v.Name == name || volumeSourceIs(v, name) {
			if !hotpluggable(v) {
				return fmt.Errorf("Unable to remove volume [%s] because it is not hotpluggable", v.Name)
			}
			return nil
		}
	}
	return fmt.Errorf("Unable to remove volume [%s] because it does not exist", name)
}

// hotplugDiskCauses is upstream's ValidateHotplugDiskConfiguration: a hot-plugged disk must be
// a disk on the scsi or virtio bus (an unset bus is refused too), or a LUN on scsi.
func hotplugDiskCauses(disk *kubevirtv1.Disk, name, prefix string) []metav1.StatusCause {
	invalid := func(format string, args ...any) []metav1.StatusCause {
		return []metav1.StatusCause{{Type: metav1.CauseTypeFieldValueInvalid, Message: fmt.Sprintf(format, args...)}}
	}
	switch {
	case disk.Disk != nil:
		if bus := disk.Disk.Bus; bus != kubevirtv1.DiskBusSCSI && bus != kubevirtv1.DiskBusVirtio {
			return invalid("%s for disk [%s] requires bus to be 'scsi' or 'virtio'. [%s] is not permitted.", prefix, name, bus)
		}
		if disk.DedicatedIOThread != nil && *disk.DedicatedIOThread && disk.Disk.Bus != kubevirtv1.DiskBusVirtio {
			return invalid("%s for [%s] requires virtio bus for IOThreads.", prefix, name)
		}
	case disk.LUN != nil:
		if disk.LUN.Bus != kubevirtv1.DiskBusSCSI {
			return invalid("%s for LUN [%s] requires bus to be 'scsi'. [%s] is not permitted.", prefix, name, disk.LUN.Bus)
		}
	default:
		return invalid("%s for [%s] requires diskDevice of type 'disk' or 'lun' to be used.", prefix, name)
	}
	return nil
}

// sourceCauses refuses a request naming neither a PVC nor a DataVolume.
func sourceCauses(opts *kubevirtv1.AddVolumeOptions) []metav1.StatusCause {
	if sourceName(opts.VolumeSource) == "" {
		return []metav1.StatusCause{{Type: metav1.CauseTypeFieldValueInvalid, Message: fmt.Sprintf("volume %s is not a PVC or DataVolume", opts.Name)}}
	}
	return nil
}

var serialPattern = regexp.MustCompile(`^[A-Za-z0-9_.+-]+$`)

// serialCauses is upstream's disk serial validation (allowed characters, at most 256).
func serialCauses(disks []kubevirtv1.Disk, field string) []metav1.StatusCause {
	var causes []metav1.StatusCause
	for i, d := range disks {
		path := fmt.Sprintf("%s[%d]", field, i)
		if d.Serial != "" && !serialPattern.MatchString(d.Serial) {
			causes = append(causes, metav1.StatusCause{Type: metav1.CauseTypeFieldValueInvalid, Field: path + ".serial",
				Message: path + " must be made up of the following characters [A-Za-z0-9_.+-], if specified"})
		}
		if len([]rune(d.Serial)) > 256 {
			causes = append(causes, metav1.StatusCause{Type: metav1.CauseTypeFieldValueInvalid, Field: path + ".serial",
				Message: path + " must be less than or equal to 256 in length, if specified"})
		}
	}
	return causes
}

// vmiConflictCauses refuses a VM-level add whose name is taken on the running VMI by a
// different volume (upstream's VM webhook compares the two).
func vmiConflictCauses(vmiVolumes []kubevirtv1.Volume, opts *kubevirtv1.AddVolumeOptions) []metav1.StatusCause {
	want := newVolume(opts)
	for _, v := range vmiVolumes {
		if v.Name == opts.Name && !volumeSourceEqual(v, want) {
			return []metav1.StatusCause{{Type: metav1.CauseTypeFieldValueInvalid,
				Message: fmt.Sprintf("AddVolume request for [%s] conflicts with an existing volume of the same name on currently running vmi", opts.Name)}}
		}
	}
	return nil
}

func volumeSourceEqual(a, b kubevirtv1.Volume) bool {
	switch {
	case a.PersistentVolumeClaim != nil && b.PersistentVolumeClaim != nil:
		return *a.PersistentVolumeClaim == *b.PersistentVolumeClaim
	case a.DataVolume != nil && b.DataVolume != nil:
		return *a.DataVolume == *b.DataVolume
	}
	return false
}

func newVolume(opts *kubevirtv1.AddVolumeOptions) kubevirtv1.Volume {
	v := kubevirtv1.Volume{Name: opts.Name}
	if pvc := opts.VolumeSource.PersistentVolumeClaim; pvc != nil {
		c := *pvc
		c.Hotpluggable = true
		v.PersistentVolumeClaim = &c
	} else if dv := opts.VolumeSource.DataVolume; dv != nil {
		c := *dv
		c.Hotpluggable = true
		v.DataVolume = &c
	}
	return v
}

// applyAdd adds the volume and its disk to spec unless a volume of that name is there already.
func applyAdd(spec *kubevirtv1.VirtualMachineInstanceSpec, opts *kubevirtv1.AddVolumeOptions) {
	for _, v := range spec.Volumes {
		if v.Name == opts.Name {
			return
		}
	}
	spec.Volumes = append(spec.Volumes, newVolume(opts))
	disk := opts.Disk.DeepCopy()
	disk.Name = opts.Name
	spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, *disk)
}

// applyRemove drops the volume and disk called name from spec; it reports whether it did.
// Like upstream it matches the volume name only, although verifyRemove also accepts a claim
// name: a removal by claim name is accepted (202) and removes nothing, as on a real cluster.
func applyRemove(spec *kubevirtv1.VirtualMachineInstanceSpec, name string) bool {
	removed := false
	volumes := spec.Volumes[:0:0]
	for _, v := range spec.Volumes {
		if v.Name == name {
			removed = true
			continue
		}
		volumes = append(volumes, v)
	}
	disks := spec.Domain.Devices.Disks[:0:0]
	for _, d := range spec.Domain.Devices.Disks {
		if d.Name != name {
			disks = append(disks, d)
		}
	}
	spec.Volumes, spec.Domain.Devices.Disks = volumes, disks
	return removed
}

// admissionDenied is the error kube-apiserver returns when a KubeVirt webhook refuses the write
// virt-api makes; virt-api passes such Invalid errors through unchanged.
func admissionDenied(webhook string, causes []metav1.StatusCause) *apierrors.StatusError {
	msgs := make([]string, 0, len(causes))
	for _, c := range causes {
		msgs = append(msgs, c.Message)
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnprocessableEntity,
		Reason:  metav1.StatusReasonInvalid,
		Message: fmt.Sprintf("admission webhook %q denied the request: %s", webhook, strings.Join(msgs, ", ")),
		Details: &metav1.StatusDetails{Causes: causes},
	}}
}

func dryRun(opts []string) bool { return len(opts) > 0 && opts[0] == metav1.DryRunAll }
