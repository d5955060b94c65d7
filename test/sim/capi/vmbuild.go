package capi

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// Labels CAPK puts on the VMs it creates (and their VMI templates).
const (
	LabelKubevirtMachineName      = "capk.cluster.x-k8s.io/kubevirt-machine-name"
	LabelKubevirtMachineNamespace = "capk.cluster.x-k8s.io/kubevirt-machine-namespace"
	labelRole                     = "cluster.x-k8s.io/role"
	cloudInitVolume               = "cloudinitvolume"
)

// vmNamespace is where CAPK puts a KubevirtMachine's VM: the template's namespace, else the
// KubevirtMachine's.
func vmNamespace(kvm *unstructured.Unstructured) string {
	if ns, _, _ := unstructured.NestedString(kvm.Object, "spec", "virtualMachineTemplate", "metadata", "namespace"); ns != "" {
		return ns
	}
	return kvm.GetNamespace()
}

// buildVM is CAPK's newVirtualMachineFromKubevirtMachine: the VM spec is the KubevirtMachine's
// virtualMachineTemplate as is (run strategy included — CAPK does not default it), named
// after the KubevirtMachine, with cluster/role/machine labels on the VM and on its VMI
// template (so KubeVirt copies them to the VMI and its launcher pod), the cloud-init drive
// with the bootstrap data, and DataVolume templates prefixed with the machine name.
func buildVM(kvm *unstructured.Unstructured, machine *clusterv1.Machine) (*kubevirtv1.VirtualMachine, error) {
	spec, err := vmSpecAt(kvm, "spec", "virtualMachineTemplate", "spec")
	if err != nil {
		return nil, err
	}
	if machine.Spec.Bootstrap.DataSecretName == nil {
		return nil, fmt.Errorf("machine %s has no bootstrap data yet", machine.Name)
	}
	name := kvm.GetName()
	role := "worker"
	if hasKey(machine.Labels, clusterv1.MachineControlPlaneLabel) {
		role = "control-plane"
	}
	capkLabels := map[string]string{
		"kubevirt.io/vm":              name,
		"name":                        name,
		labelRole:                     role,
		clusterv1.ClusterNameLabel:    machine.Spec.ClusterName,
		LabelKubevirtMachineName:      name,
		LabelKubevirtMachineNamespace: kvm.GetNamespace(),
	}

	vmLabels, _, _ := unstructured.NestedStringMap(kvm.Object, "spec", "virtualMachineTemplate", "metadata", "labels")
	vmAnnotations, _, _ := unstructured.NestedStringMap(kvm.Object, "spec", "virtualMachineTemplate", "metadata", "annotations")
	vm := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: vmNamespace(kvm), Labels: vmLabels, Annotations: vmAnnotations},
		Spec:       *spec,
	}
	if vm.Labels == nil {
		vm.Labels = map[string]string{}
	}
	maps.Copy(vm.Labels, capkLabels)

	tmpl := vm.Spec.Template
	tmpl.ObjectMeta = metav1.ObjectMeta{Labels: maps.Clone(tmpl.ObjectMeta.Labels), Annotations: maps.Clone(tmpl.ObjectMeta.Annotations)}
	if tmpl.ObjectMeta.Labels == nil {
		tmpl.ObjectMeta.Labels = map[string]string{}
	}
	maps.Copy(tmpl.ObjectMeta.Labels, capkLabels)
	tmpl.Spec.Volumes = append(tmpl.Spec.Volumes, kubevirtv1.Volume{
		Name: cloudInitVolume,
		VolumeSource: kubevirtv1.VolumeSource{CloudInitConfigDrive: &kubevirtv1.CloudInitConfigDriveSource{
			UserDataSecretRef: &corev1.LocalObjectReference{Name: *machine.Spec.Bootstrap.DataSecretName + "-userdata"},
		}},
	})
	tmpl.Spec.Domain.Devices.Disks = append(tmpl.Spec.Domain.Devices.Disks, kubevirtv1.Disk{
		Name: cloudInitVolume, DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}},
	})
	prefixDataVolumes(vm, name)
	return vm, nil
}

// prefixDataVolumes renames DataVolume templates to <machine>-<name> and the volumes using
// them, so every machine of a template gets its own disks.
func prefixDataVolumes(vm *kubevirtv1.VirtualMachine, prefix string) {
	renamed := map[string]string{}
	for i := range vm.Spec.DataVolumeTemplates {
		n := prefix + "-" + vm.Spec.DataVolumeTemplates[i].Name
		renamed[vm.Spec.DataVolumeTemplates[i].Name] = n
		vm.Spec.DataVolumeTemplates[i].Name = n
	}
	for i := range vm.Spec.Template.Spec.Volumes {
		v := &vm.Spec.Template.Spec.Volumes[i]
		if v.PersistentVolumeClaim != nil {
			if n, ok := renamed[v.PersistentVolumeClaim.ClaimName]; ok {
				v.PersistentVolumeClaim.ClaimName = n
			}
		} else if v.DataVolume != nil {
			if n, ok := renamed[v.DataVolume.Name]; ok {
				v.DataVolume.Name = n
			}
		}
	}
}
