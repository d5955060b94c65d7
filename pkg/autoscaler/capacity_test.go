package autoscaler

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// equalLists compares resource lists by quantity value.
func equalLists(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || va.Cmp(vb) != 0 {
			return false
		}
	}
	return true
}

func rl(kv ...string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return out
}

func TestCapacityFromAnnotations(t *testing.T) {
	tests := []struct {
		name    string
		ann     map[string]string
		want    corev1.ResourceList
		wantErr string
	}{
		{"none", nil, rl(), ""},
		{"cpu and memory", map[string]string{AnnotationCapacityCPU: "4", AnnotationCapacityMemory: "16Gi"}, rl("cpu", "4", "memory", "16Gi"), ""},
		{"all", map[string]string{AnnotationCapacityCPU: "500m", AnnotationCapacityMemory: "1G",
			AnnotationCapacityEphemeralDisk: "100Gi", AnnotationCapacityMaxPods: "64",
			AnnotationCapacityGPUType: "nvidia.com/gpu", AnnotationCapacityGPUCount: "2"},
			rl("cpu", "500m", "memory", "1G", "ephemeral-storage", "100Gi", "pods", "64", "nvidia.com/gpu", "2"), ""},
		{"gpu count zero", map[string]string{AnnotationCapacityGPUType: "nvidia.com/gpu", AnnotationCapacityGPUCount: "0"}, rl(), ""},
		{"gpu count without type", map[string]string{AnnotationCapacityGPUCount: "1"}, rl(), "needs"},
		{"bad gpu type", map[string]string{AnnotationCapacityGPUType: "nvidia gpu", AnnotationCapacityGPUCount: "1"}, rl(), "not a resource name"},
		{"bad cpu keeps memory", map[string]string{AnnotationCapacityCPU: "four", AnnotationCapacityMemory: "1Gi"}, rl("memory", "1Gi"), "not a quantity"},
		{"negative memory", map[string]string{AnnotationCapacityMemory: "-1Gi"}, rl(), "negative"},
		{"fractional pods", map[string]string{AnnotationCapacityMaxPods: "1.5"}, rl(), "not a non-negative integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CapacityFromAnnotations(tt.ann)
			if !equalLists(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestCapacityFromTemplateStatus(t *testing.T) {
	got, err := CapacityFromTemplateStatus(map[string]any{"cpu": "2", "memory": "4Gi", "pods": int64(50), "nvidia.com/gpu": float64(1)})
	if err != nil || !equalLists(got, rl("cpu", "2", "memory", "4Gi", "pods", "50", "nvidia.com/gpu", "1")) {
		t.Fatalf("got %v, %v", got, err)
	}
	got, err = CapacityFromTemplateStatus(map[string]any{"cpu": "x", "memory": true, "pods": "10"})
	if err == nil || !equalLists(got, rl("pods", "10")) {
		t.Fatalf("bad entries must be reported and skipped: %v, %v", got, err)
	}
}

func TestCapacityFromVMSpec(t *testing.T) {
	q := resource.MustParse
	vm := func(dom kubevirtv1.DomainSpec) *kubevirtv1.VirtualMachineSpec {
		return &kubevirtv1.VirtualMachineSpec{Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
			Spec: kubevirtv1.VirtualMachineInstanceSpec{Domain: dom}}}
	}
	guest := q("6Gi")
	tests := []struct {
		name string
		spec *kubevirtv1.VirtualMachineSpec
		want corev1.ResourceList
	}{
		{"nil", nil, rl()},
		{"no template", &kubevirtv1.VirtualMachineSpec{}, rl()},
		{"instancetype", &kubevirtv1.VirtualMachineSpec{Instancetype: &kubevirtv1.InstancetypeMatcher{Name: "u1.large"},
			Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{}}, rl()},
		{"topology and guest memory", vm(kubevirtv1.DomainSpec{
			CPU:    &kubevirtv1.CPU{Cores: 2, Sockets: 2, Threads: 2},
			Memory: &kubevirtv1.Memory{Guest: &guest},
			Resources: kubevirtv1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceMemory: q("8Gi"), corev1.ResourceCPU: q("1")}},
		}), rl("cpu", "8", "memory", "6Gi")},
		{"cores only", vm(kubevirtv1.DomainSpec{CPU: &kubevirtv1.CPU{Cores: 3}}), rl("cpu", "3")},
		{"cpu limit rounded up", vm(kubevirtv1.DomainSpec{Resources: kubevirtv1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceCPU: q("1500m"), corev1.ResourceMemory: q("2Gi")}}}),
			rl("cpu", "2", "memory", "2Gi")},
		{"cpu request", vm(kubevirtv1.DomainSpec{Resources: kubevirtv1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m"), corev1.ResourceMemory: q("1Gi")}}}),
			rl("cpu", "1", "memory", "1Gi")},
		{"nothing: one vCPU, memory unknown", vm(kubevirtv1.DomainSpec{}), rl("cpu", "1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CapacityFromVMSpec(tt.spec); !equalLists(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMergeCapacity(t *testing.T) {
	got := MergeCapacity(rl("cpu", "1", "memory", "1Gi"), nil, rl("cpu", "2"), rl("pods", "10"))
	if !equalLists(got, rl("cpu", "2", "memory", "1Gi", "pods", "10")) {
		t.Fatalf("got %v", got)
	}
}
