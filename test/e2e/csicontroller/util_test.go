package csicontroller_test

import (
	"context"

	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/test/fixture"
)

func fixtureStorage() config.Storage { return fixture.Storage() }

func hasDisk(disks []kubevirtv1.Disk, name, serial string) bool {
	for _, d := range disks {
		if d.Name == name && d.Serial == serial {
			return true
		}
	}
	return false
}

func specHasVolume(spec *kubevirtv1.VirtualMachineInstanceSpec, id string) bool {
	for _, v := range spec.Volumes {
		if v.Name == id {
			return true
		}
	}
	return false
}

func hasVolume(vmi *kubevirtv1.VirtualMachineInstance, id string) bool {
	if specHasVolume(&vmi.Spec, id) {
		return true
	}
	for _, st := range vmi.Status.VolumeStatus {
		if st.Name == id {
			return true
		}
	}
	return false
}

func vmHasVolume(vm *kubevirtv1.VirtualMachine, id string) bool {
	return vm.Spec.Template != nil && specHasVolume(&vm.Spec.Template.Spec, id)
}

func createNamespace(ctx context.Context, ns string) error {
	return fixture.CreateNamespace(ctx, kube(), ns)
}

func createRunningVM(ctx context.Context, ns, cluster, name string) error {
	return fixture.CreateRunningVM(ctx, kube(), ns, cluster, name, "")
}
