package autoscaler

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// A template node's capacity comes from three sources, most specific last so it wins per
// resource (as in the clusterapi provider, where annotations override the infrastructure
// template's status):
//  1. the VM spec in the KubevirtMachineTemplate (what the guest will see),
//  2. KubevirtMachineTemplate status.capacity (what CAPK computed),
//  3. the capacity.cluster-autoscaler.kubernetes.io/* annotations (what the operator says).

// CapacityFromAnnotations reads the scale-from-zero capacity annotations. Only set resources
// are returned; pods is left to the caller's default when maxPods is absent.
func CapacityFromAnnotations(ann map[string]string) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	var errs []error
	for _, kv := range []struct {
		key  string
		name corev1.ResourceName
	}{
		{AnnotationCapacityCPU, corev1.ResourceCPU},
		{AnnotationCapacityMemory, corev1.ResourceMemory},
		{AnnotationCapacityEphemeralDisk, corev1.ResourceEphemeralStorage},
	} {
		key, name := kv.key, kv.name
		v, ok := ann[key]
		if !ok {
			continue
		}
		q, err := parseCapacity(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %w", key, err))
			continue
		}
		out[name] = q
	}
	if v, ok := ann[AnnotationCapacityMaxPods]; ok {
		if q, err := parseCount(v); err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %w", AnnotationCapacityMaxPods, err))
		} else {
			out[corev1.ResourcePods] = q
		}
	}
	gpuType, hasType := ann[AnnotationCapacityGPUType]
	gpuCount, hasCount := ann[AnnotationCapacityGPUCount]
	switch {
	case hasCount && !hasType:
		errs = append(errs, fmt.Errorf("annotation %s needs %s (the extended resource name, e.g. nvidia.com/gpu)",
			AnnotationCapacityGPUCount, AnnotationCapacityGPUType))
	case hasCount:
		q, err := parseCount(gpuCount)
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %w", AnnotationCapacityGPUCount, err))
			break
		}
		if msgs := validation.IsQualifiedName(gpuType); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("annotation %s: %q is not a resource name", AnnotationCapacityGPUType, gpuType))
			break
		}
		if !q.IsZero() {
			out[corev1.ResourceName(gpuType)] = q
		}
	}
	return out, errors.Join(errs...)
}

// CapacityFromTemplateStatus reads KubevirtMachineTemplate status.capacity as found in an
// unstructured object: a map of resource name to quantity (string or number).
func CapacityFromTemplateStatus(capacity map[string]any) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	var errs []error
	for name, raw := range capacity {
		var s string
		switch v := raw.(type) {
		case string:
			s = v
		case int64:
			s = strconv.FormatInt(v, 10)
		case float64:
			s = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			errs = append(errs, fmt.Errorf("status.capacity[%s]: unexpected %T", name, raw))
			continue
		}
		q, err := parseCapacity(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("status.capacity[%s]: %w", name, err))
			continue
		}
		out[corev1.ResourceName(name)] = q
	}
	return out, errors.Join(errs...)
}

// CapacityFromVMSpec derives cpu and memory from a VirtualMachine spec the way KubeVirt sizes
// the guest: vCPUs are cores×sockets×threads (each defaulting to 1) when a topology is given,
// else the CPU limit or request rounded up, else 1; memory is memory.guest, else the memory
// request, else the limit. A VM sized by an instancetype is not resolved here (that would
// need cluster-scoped reads), so nothing is returned for it.
func CapacityFromVMSpec(spec *kubevirtv1.VirtualMachineSpec) corev1.ResourceList {
	out := corev1.ResourceList{}
	if spec == nil || spec.Template == nil || spec.Instancetype != nil {
		return out
	}
	dom := spec.Template.Spec.Domain
	res := dom.Resources
	switch {
	case dom.CPU != nil && (dom.CPU.Cores > 0 || dom.CPU.Sockets > 0 || dom.CPU.Threads > 0):
		n := int64(max(dom.CPU.Cores, 1)) * int64(max(dom.CPU.Sockets, 1)) * int64(max(dom.CPU.Threads, 1))
		out[corev1.ResourceCPU] = *resource.NewQuantity(n, resource.DecimalSI)
	case !res.Limits.Cpu().IsZero():
		out[corev1.ResourceCPU] = wholeCPUs(res.Limits.Cpu())
	case !res.Requests.Cpu().IsZero():
		out[corev1.ResourceCPU] = wholeCPUs(res.Requests.Cpu())
	default:
		out[corev1.ResourceCPU] = *resource.NewQuantity(1, resource.DecimalSI)
	}
	switch {
	case dom.Memory != nil && dom.Memory.Guest != nil && !dom.Memory.Guest.IsZero():
		out[corev1.ResourceMemory] = dom.Memory.Guest.DeepCopy()
	case !res.Requests.Memory().IsZero():
		out[corev1.ResourceMemory] = res.Requests.Memory().DeepCopy()
	case !res.Limits.Memory().IsZero():
		out[corev1.ResourceMemory] = res.Limits.Memory().DeepCopy()
	}
	return out
}

// wholeCPUs rounds a CPU quantity up to whole vCPUs, as a guest cannot have a fraction.
func wholeCPUs(q *resource.Quantity) resource.Quantity {
	n := int64(math.Ceil(float64(q.MilliValue()) / 1000))
	return *resource.NewQuantity(max(n, 1), resource.DecimalSI)
}

// MergeCapacity overlays the lists left to right: a later list wins for a resource it sets.
func MergeCapacity(lists ...corev1.ResourceList) corev1.ResourceList {
	out := corev1.ResourceList{}
	for _, l := range lists {
		maps.Copy(out, l)
	}
	return out
}

// parseCapacity accepts a positive quantity such as "4", "500m" or "16Gi".
func parseCapacity(s string) (resource.Quantity, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return resource.Quantity{}, fmt.Errorf("%q is not a quantity", s)
	}
	if q.Sign() < 0 {
		return resource.Quantity{}, fmt.Errorf("%q is negative", s)
	}
	return q, nil
}

// parseCount accepts a non-negative integer, for pods and GPUs.
func parseCount(s string) (resource.Quantity, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return resource.Quantity{}, fmt.Errorf("%q is not a non-negative integer", s)
	}
	return *resource.NewQuantity(n, resource.DecimalSI), nil
}
