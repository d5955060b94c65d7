package infra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Declarative hot-plug (KubeVirt's DeclarativeHotplugVolumes feature gate): the client edits
// the VM's spec.template.spec volumes and disks itself, and KubeVirt's VM controller hot-plugs
// the difference into the running VMI (pkg/storage/hotplug in kubevirt/kubevirt).
//
// The edit is a JSON patch that first replaces metadata.resourceVersion with the version the
// caller read: the apiserver then applies it only to that version and answers 409 Conflict
// otherwise, so the patch can never land on a list another writer changed meanwhile (CAPK,
// an operator, KubeVirt syncing the firmware UUID). Server-side apply cannot do this job:
// KubeVirt's CRD declares neither list as a map keyed by name, so an apply would own (and on
// a conflict, overwrite) the whole list, the VM's own boot disk included.

// errNoTemplate is returned for a VM without spec.template, which no KubeVirt VM that runs has.
var errNoTemplate = errors.New("the VM has no spec.template")

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

const (
	volumesPath = "/spec/template/spec/volumes"
	disksPath   = "/spec/template/spec/domain/devices/disks"
)

// AddVolumePatch is the JSON patch that appends vol and disk to vm's template at vm's
// resourceVersion. It adds nothing else and replaces no entry.
func AddVolumePatch(vm *kubevirtv1.VirtualMachine, vol kubevirtv1.Volume, disk kubevirtv1.Disk) ([]byte, error) {
	if vm.Spec.Template == nil {
		return nil, errNoTemplate
	}
	if vm.ResourceVersion == "" {
		return nil, errors.New("the VM has no resourceVersion")
	}
	ops := []patchOp{{Op: "replace", Path: "/metadata/resourceVersion", Value: vm.ResourceVersion}}
	spec := &vm.Spec.Template.Spec
	// "add" on a missing list creates it; on an existing one "-" appends. JSON patch has no
	// "append or create", so the choice rests on the version read, which the resourceVersion
	// precondition pins.
	if spec.Volumes == nil {
		ops = append(ops, patchOp{Op: "add", Path: volumesPath, Value: []kubevirtv1.Volume{vol}})
	} else {
		ops = append(ops, patchOp{Op: "add", Path: volumesPath + "/-", Value: vol})
	}
	if spec.Domain.Devices.Disks == nil {
		ops = append(ops, patchOp{Op: "add", Path: disksPath, Value: []kubevirtv1.Disk{disk}})
	} else {
		ops = append(ops, patchOp{Op: "add", Path: disksPath + "/-", Value: disk})
	}
	return json.Marshal(ops)
}

// RemoveVolumePatch is the JSON patch that removes the volume called name and the disk of the
// same name from vm's template at vm's resourceVersion, touching no other entry; found is false
// (and the patch nil) when the template has neither.
func RemoveVolumePatch(vm *kubevirtv1.VirtualMachine, name string) (patch []byte, found bool, err error) {
	if vm.Spec.Template == nil {
		return nil, false, nil
	}
	if vm.ResourceVersion == "" {
		return nil, false, errors.New("the VM has no resourceVersion")
	}
	ops := []patchOp{{Op: "replace", Path: "/metadata/resourceVersion", Value: vm.ResourceVersion}}
	spec := &vm.Spec.Template.Spec
	for i, v := range spec.Volumes {
		if v.Name == name {
			ops = append(ops, patchOp{Op: "remove", Path: volumesPath + "/" + strconv.Itoa(i)})
			break
		}
	}
	for i, d := range spec.Domain.Devices.Disks {
		if d.Name == name {
			ops = append(ops, patchOp{Op: "remove", Path: disksPath + "/" + strconv.Itoa(i)})
			break
		}
	}
	if len(ops) == 1 {
		return nil, false, nil
	}
	patch, err = json.Marshal(ops)
	return patch, true, err
}

// AddTemplateVolume appends vol and disk to the template of vm, a VM of this cluster as read
// (Client.VM). A 409 Conflict means the VM changed since it was read: read it again and retry.
func (c *Client) AddTemplateVolume(ctx context.Context, vm *kubevirtv1.VirtualMachine, vol kubevirtv1.Volume, disk kubevirtv1.Disk) error {
	if !c.scope.InCluster(vm) {
		return fmt.Errorf("patching VM %s/%s: %w", vm.Namespace, vm.Name, errNotInCluster)
	}
	patch, err := AddVolumePatch(vm, vol, disk)
	if err != nil {
		return fmt.Errorf("VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	return c.patchVM(ctx, vm, patch)
}

// RemoveTemplateVolume removes the volume and disk called name from the template of vm (as
// AddTemplateVolume, conflicts included); a template without them is left alone.
func (c *Client) RemoveTemplateVolume(ctx context.Context, vm *kubevirtv1.VirtualMachine, name string) error {
	if !c.scope.InCluster(vm) {
		return fmt.Errorf("patching VM %s/%s: %w", vm.Namespace, vm.Name, errNotInCluster)
	}
	patch, found, err := RemoveVolumePatch(vm, name)
	if err != nil || !found {
		return err
	}
	return c.patchVM(ctx, vm, patch)
}

func (c *Client) patchVM(ctx context.Context, vm *kubevirtv1.VirtualMachine, patch []byte) error {
	// A copy: Patch decodes the answer into the object, and vm may be the cache's.
	target := &kubevirtv1.VirtualMachine{}
	target.Namespace, target.Name = c.scope.Namespace, vm.Name
	return c.client.Patch(ctx, target, client.RawPatch(types.JSONPatchType, patch))
}
