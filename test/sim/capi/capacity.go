package capi

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// podsPerNode is the kubelet's default max-pods.
const podsPerNode = 110

// vCPUs is the number of CPUs the guest sees: the CPU topology's sockets × cores × threads when
// given, else the CPU limit or request rounded up (KubeVirt derives the topology from them),
// else 1.
func vCPUs(d *kubevirtv1.DomainSpec) int64 {
	if c := d.CPU; c != nil && (c.Sockets > 0 || c.Cores > 0 || c.Threads > 0) {
		return int64(max(c.Sockets, 1)) * int64(max(c.Cores, 1)) * int64(max(c.Threads, 1))
	}
	for _, rl := range []corev1.ResourceList{d.Resources.Limits, d.Resources.Requests} {
		if q, ok := rl[corev1.ResourceCPU]; ok {
			return max((q.MilliValue()+999)/1000, 1)
		}
	}
	return 1
}

// guestCapacity is what a kubelet inside the VM reports: its vCPUs, the guest memory
// (memory.guest, else the memory request), and max-pods. A real kubelet reports slightly less
// memory (what the kernel keeps); the simulator reports the configured size exactly.
func guestCapacity(spec *kubevirtv1.VirtualMachineInstanceSpec) corev1.ResourceList {
	rl := corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(vCPUs(&spec.Domain), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(podsPerNode, resource.DecimalSI),
	}
	if m := spec.Domain.Memory; m != nil && m.Guest != nil {
		rl[corev1.ResourceMemory] = m.Guest.DeepCopy()
	} else if q, ok := spec.Domain.Resources.Requests[corev1.ResourceMemory]; ok {
		rl[corev1.ResourceMemory] = q.DeepCopy()
	}
	return rl
}

// templateCapacity is what CAPK (since its scale-from-zero change, kubernetes-sigs/
// cluster-api-provider-kubevirt#373) publishes in KubevirtMachineTemplate status.capacity for
// the cluster autoscaler: CPU from the CPU topology (else the CPU request), memory from the
// memory request (else memory.guest).
func templateCapacity(spec *kubevirtv1.VirtualMachineInstanceSpec) corev1.ResourceList {
	rl := corev1.ResourceList{corev1.ResourceCPU: *resource.NewQuantity(vCPUs(&spec.Domain), resource.DecimalSI)}
	if q, ok := spec.Domain.Resources.Requests[corev1.ResourceMemory]; ok {
		rl[corev1.ResourceMemory] = q.DeepCopy()
	} else if m := spec.Domain.Memory; m != nil && m.Guest != nil {
		rl[corev1.ResourceMemory] = m.Guest.DeepCopy()
	}
	return rl
}

// vmSpecAt decodes the VirtualMachine spec nested in a CAPK object at path (…virtualMachineTemplate.spec).
func vmSpecAt(obj *unstructured.Unstructured, path ...string) (*kubevirtv1.VirtualMachineSpec, error) {
	raw, found, err := unstructured.NestedMap(obj.Object, path...)
	if err != nil || !found {
		return nil, fmt.Errorf("%s %s has no %v: %v", obj.GetKind(), obj.GetName(), path, err)
	}
	spec := &kubevirtv1.VirtualMachineSpec{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, spec); err != nil {
		return nil, fmt.Errorf("decoding VM spec of %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	if spec.Template == nil {
		spec.Template = &kubevirtv1.VirtualMachineInstanceTemplateSpec{}
	}
	return spec, nil
}
