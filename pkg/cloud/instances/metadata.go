package instances

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/vmaddr"
)

// InstanceType is the VM's instancetype name when it uses one, else "<vCPUs>c<memory>" from its
// template, e.g. "2c3Gi". The result is always a valid label value (it becomes
// node.kubernetes.io/instance-type), or empty when nothing usable is known.
func InstanceType(vm *kubevirtv1.VirtualMachine) string {
	if it := vm.Spec.Instancetype; it != nil && it.Name != "" && validLabel(it.Name) {
		return it.Name
	}
	if vm.Spec.Template == nil {
		return ""
	}
	d := vm.Spec.Template.Spec.Domain
	cpus := int64(1)
	if c := d.CPU; c != nil {
		cpus = int64(max(c.Sockets, 1)) * int64(max(c.Cores, 1)) * int64(max(c.Threads, 1))
	}
	mem := ""
	switch {
	case d.Memory != nil && d.Memory.Guest != nil:
		mem = d.Memory.Guest.String()
	default:
		if q, ok := d.Resources.Requests[corev1.ResourceMemory]; ok {
			mem = q.String()
		}
	}
	if mem == "" {
		return ""
	}
	t := fmt.Sprintf("%dc%s", cpus, mem)
	if !validLabel(t) {
		return ""
	}
	return t
}

func validLabel(s string) bool { return len(validation.IsValidLabelValue(s)) == 0 }

// NodeAddresses are the VMI's addresses as InternalIP (both families, the pod-network
// interface's first) plus the guest's hostname.
func NodeAddresses(vmi *kubevirtv1.VirtualMachineInstance) []corev1.NodeAddress {
	var out []corev1.NodeAddress
	for _, a := range vmaddr.Addresses(vmi) {
		out = append(out, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	if h := Hostname(vmi); h != "" {
		out = append(out, corev1.NodeAddress{Type: corev1.NodeHostName, Address: h})
	}
	return out
}

// Hostname is KubeVirt's guest hostname: spec.hostname, else the VMI name.
func Hostname(vmi *kubevirtv1.VirtualMachineInstance) string {
	if vmi.Spec.Hostname != "" {
		return vmi.Spec.Hostname
	}
	return vmi.Name
}
