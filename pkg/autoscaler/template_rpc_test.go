package autoscaler_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

var kmtStatusOnce sync.Once

// withTemplateStatus gives this package's management apiserver the KubevirtMachineTemplate
// status.capacity that CAPK declares after v0.1.10 (see harness.AddKubevirtMachineTemplateCapacity).
// The change is confined to this test binary's harness.
func withTemplateStatus(t *testing.T) {
	t.Helper()
	kmtStatusOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := env.Management.AddKubevirtMachineTemplateCapacity(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// kmt builds a KubevirtMachineTemplate around a VM spec (nil for none).
func kmt(ns, name string, spec *kubevirtv1.VirtualMachineSpec) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion("infrastructure.cluster.x-k8s.io/v1alpha1")
	u.SetKind("KubevirtMachineTemplate")
	u.SetNamespace(ns)
	u.SetName(name)
	if spec != nil {
		// Through JSON, so the values are the plain JSON types unstructured content must hold.
		data, err := json.Marshal(spec)
		if err != nil {
			panic(err)
		}
		raw := map[string]any{}
		if err := json.Unmarshal(data, &raw); err != nil {
			panic(err)
		}
		if err := unstructured.SetNestedField(u.Object, raw, "spec", "template", "spec", "virtualMachineTemplate", "spec"); err != nil {
			panic(err)
		}
	}
	return u
}

// vmSpec is a CAPK-style worker VM with the given CPU topology and guest memory.
func vmSpec(cpu *kubevirtv1.CPU, guest *resource.Quantity) *kubevirtv1.VirtualMachineSpec {
	return &kubevirtv1.VirtualMachineSpec{
		RunStrategy: ptr(kubevirtv1.RunStrategyAlways),
		Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{Spec: kubevirtv1.VirtualMachineInstanceSpec{
			Domain: kubevirtv1.DomainSpec{CPU: cpu, Memory: &kubevirtv1.Memory{Guest: guest}},
		}},
	}
}

// createKMT creates a template, optionally with status.capacity.
func (f *fixture) createKMT(name string, spec *kubevirtv1.VirtualMachineSpec, capacity map[string]string, labels map[string]string) {
	f.t.Helper()
	u := kmt(f.ns, name, spec)
	u.SetLabels(labels)
	f.create(u)
	if capacity != nil {
		_ = unstructured.SetNestedStringMap(u.Object, capacity, "status", "capacity")
		if err := f.mgmt.Status().Update(f.ctx, u); err != nil {
			f.t.Fatalf("setting KubevirtMachineTemplate status: %v", err)
		}
	}
}

func (f *fixture) templateNode(group string) (*corev1.Node, error) {
	resp, err := f.cl.NodeGroupTemplateNodeInfo(f.ctx, &protos.NodeGroupTemplateNodeInfoRequest{Id: f.group(group)})
	return resp.GetNodeInfo(), err
}

func wantCapacity(t *testing.T, n *corev1.Node, kv ...string) {
	t.Helper()
	want := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		want[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	if len(n.Status.Capacity) != len(want) {
		t.Fatalf("capacity %v, want %v", n.Status.Capacity, want)
	}
	for k, q := range want {
		got := n.Status.Capacity[k]
		alloc := n.Status.Allocatable[k]
		if got.Cmp(q) != 0 || alloc.Cmp(q) != 0 {
			t.Fatalf("%s: capacity %s allocatable %s, want %s", k, got.String(), alloc.String(), q.String())
		}
	}
}

// TestTemplateNodeInfo covers the three capacity sources and their precedence.
func TestTemplateNodeInfo(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	withTemplateStatus(t)
	q := resource.MustParse

	// 1. Annotations only (the infrastructure template does not exist), scale from zero.
	ann := bounds("0", "5")
	ann[autoscaler.AnnotationCapacityCPU] = "4"
	ann[autoscaler.AnnotationCapacityMemory] = "16Gi"
	ann[autoscaler.AnnotationCapacityEphemeralDisk] = "50Gi"
	ann[autoscaler.AnnotationCapacityMaxPods] = "60"
	ann[autoscaler.AnnotationCapacityGPUType] = "nvidia.com/gpu"
	ann[autoscaler.AnnotationCapacityGPUCount] = "1"
	ann[autoscaler.AnnotationCapacityLabels] = "example.com/disk=ssd"
	ann[autoscaler.AnnotationCapacityTaints] = "dedicated=ml:NoSchedule"
	f.md("annotated", mdOpts{annotations: ann, mutate: func(md *clusterv1.MachineDeployment) {
		md.Spec.Template.Labels["node-role.kubernetes.io/worker"] = ""
		md.Spec.Template.Labels["node.cluster.x-k8s.io/pool"] = "ml"
		md.Spec.Template.Spec.Taints = []clusterv1.MachineTaint{{Key: "gpu", Effect: corev1.TaintEffectNoExecute, Propagation: "Always"}}
		md.Spec.Template.Spec.FailureDomain = "zone-a"
	}})

	// 2. KubevirtMachineTemplate status.capacity, one value overridden by an annotation; the
	//    VM spec says otherwise and loses.
	f.createKMT("from-status-tmpl", vmSpec(&kubevirtv1.CPU{Cores: 1}, ptr(q("1Gi"))),
		map[string]string{"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi"}, nil)
	ann2 := bounds("0", "5")
	ann2[autoscaler.AnnotationCapacityMemory] = "30Gi"
	f.md("from-status", mdOpts{annotations: ann2})

	// 3. Only the VM spec: 2 cores × 2 sockets × 1 thread, 6Gi guest memory, arm64.
	spec := vmSpec(&kubevirtv1.CPU{Cores: 2, Sockets: 2}, ptr(q("6Gi")))
	spec.Template.Spec.Architecture = "arm64"
	f.createKMT("from-vm-tmpl", spec, nil, nil)
	f.md("from-vm", mdOpts{annotations: bounds("0", "5")})

	// 4. Nothing known: a VM sized by an instancetype.
	it := vmSpec(nil, nil)
	it.Template.Spec.Domain.Memory = nil
	it.Instancetype = &kubevirtv1.InstancetypeMatcher{Name: "u1.large"}
	f.createKMT("unknown-tmpl", it, nil, nil)
	f.md("unknown", mdOpts{annotations: bounds("0", "5")})

	// 5. A template another cluster labelled as its own is not used, even though our
	//    MachineDeployment references it.
	f.createKMT("foreign-tmpl", vmSpec(&kubevirtv1.CPU{Cores: 4}, ptr(q("8Gi"))),
		map[string]string{"cpu": "4", "memory": "8Gi"}, map[string]string{infra.LabelClusterName: "beta"})
	f.md("foreign", mdOpts{annotations: bounds("0", "5")})

	f.start()

	n, err := f.templateNode("annotated")
	if err != nil {
		t.Fatal(err)
	}
	wantCapacity(t, n, "cpu", "4", "memory", "16Gi", "ephemeral-storage", "50Gi", "pods", "60", "nvidia.com/gpu", "1")
	for k, v := range map[string]string{
		"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": "zone-a",
		"node-role.kubernetes.io/worker": "", "node.cluster.x-k8s.io/pool": "ml", "example.com/disk": "ssd",
	} {
		if got, ok := n.Labels[k]; !ok || got != v {
			t.Errorf("label %s=%q (present %v), want %q", k, got, ok, v)
		}
	}
	if _, ok := n.Labels[clusterv1.MachineDeploymentNameLabel]; ok {
		t.Error("a label Cluster API does not put on Nodes leaked into the template")
	}
	if len(n.Spec.Taints) != 2 || n.Spec.Taints[0].Key != "dedicated" || n.Spec.Taints[1].Key != "gpu" {
		t.Errorf("taints %v", n.Spec.Taints)
	}
	if len(n.Status.Conditions) == 0 || n.Status.Conditions[0].Type != corev1.NodeReady {
		t.Errorf("conditions %v", n.Status.Conditions)
	}

	n, err = f.templateNode("from-status")
	if err != nil {
		t.Fatal(err)
	}
	wantCapacity(t, n, "cpu", "8", "memory", "30Gi", "ephemeral-storage", "100Gi", "pods", "110")

	n, err = f.templateNode("from-vm")
	if err != nil {
		t.Fatal(err)
	}
	wantCapacity(t, n, "cpu", "4", "memory", "6Gi", "pods", "110")
	if n.Labels["kubernetes.io/arch"] != "arm64" {
		t.Errorf("arch label %q", n.Labels["kubernetes.io/arch"])
	}

	for _, g := range []string{"unknown", "foreign"} {
		_, err = f.templateNode(g)
		wantCode(t, err, codes.Unimplemented, "capacity unknown")
	}
}
