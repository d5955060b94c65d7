package instances

import (
	"context"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

var scope = infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}

func vm(name, cluster string, mut func(*kubevirtv1.VirtualMachine)) *kubevirtv1.VirtualMachine {
	mem := resource.MustParse("3Gi")
	v := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: name, Labels: map[string]string{infra.LabelClusterName: cluster}},
		Spec: kubevirtv1.VirtualMachineSpec{Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{Spec: kubevirtv1.VirtualMachineInstanceSpec{
			Domain: kubevirtv1.DomainSpec{CPU: &kubevirtv1.CPU{Cores: 2}, Memory: &kubevirtv1.Memory{Guest: &mem}},
		}}},
	}
	if mut != nil {
		mut(v)
	}
	return v
}

func vmi(name, cluster string, phase kubevirtv1.VirtualMachineInstancePhase) *kubevirtv1.VirtualMachineInstance {
	return &kubevirtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: name, Labels: map[string]string{infra.LabelClusterName: cluster}},
		Status: kubevirtv1.VirtualMachineInstanceStatus{
			Phase:    phase,
			NodeName: "infra-b",
			Interfaces: []kubevirtv1.VirtualMachineInstanceNetworkInterface{
				{Name: "default", IP: "10.244.0.7", IPs: []string{"10.244.0.7", "fd10:244::7", "fe80::1"}},
			},
		},
	}
}

func node(name, providerID string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{ProviderID: providerID}}
}

func newInstances(t *testing.T, zones bool, objs ...client.Object) *Instances {
	t.Helper()
	scheme, err := infra.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "infra-b", Labels: map[string]string{
		corev1.LabelTopologyZone: "zone-b", corev1.LabelTopologyRegion: "region-1",
	}}})
	fc := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	ic, err := infra.NewWithReader(scope, fc, fc)
	if err != nil {
		t.Fatal(err)
	}
	var topo *infra.NodeTopology
	if zones {
		topo = infra.NewNodeTopologyWithReader(fc)
	}
	return New(ic, topo)
}

func TestInstances(t *testing.T) {
	ctx := context.Background()
	in := newInstances(t, true,
		vm("worker-1", "alpha", nil), vmi("worker-1", "alpha", kubevirtv1.Running),
		vm("worker-2", "alpha", nil), // stopped: no VMI
		vm("worker-3", "alpha", nil), vmi("worker-3", "alpha", kubevirtv1.Succeeded),
		vm("beta-1", "beta", nil), vmi("beta-1", "beta", kubevirtv1.Running),
	)
	tests := []struct {
		name         string
		node         *corev1.Node
		wantExists   bool
		wantShutdown bool
		wantErr      bool // InstanceShutdown/InstanceMetadata fail (no VM)
	}{
		{"by providerID", node("whatever", "kubevirt://worker-1"), true, false, false},
		{"by name before providerID", node("worker-1", ""), true, false, false},
		{"stopped VM exists and is shut down", node("n2", "kubevirt://worker-2"), true, true, false},
		{"VMI finished", node("n3", "kubevirt://worker-3"), true, true, false},
		{"deleted VM", node("gone", "kubevirt://worker-9"), false, false, true},
		{"providerID of another cluster", node("worker-1", "kubevirt://beta-1"), false, false, true},
		{"name of another cluster's VM", node("beta-1", ""), false, false, true},
		{"foreign provider", node("worker-1", "aws:///us-east-1a/i-123"), false, false, true},
		{"traversal", node("worker-1", "kubevirt://../tenant-b/worker-1"), false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exists, err := in.InstanceExists(ctx, tt.node)
			if err != nil || exists != tt.wantExists {
				t.Fatalf("InstanceExists = %v, %v; want %v", exists, err, tt.wantExists)
			}
			shut, err := in.InstanceShutdown(ctx, tt.node)
			if (err != nil) != tt.wantErr || shut != tt.wantShutdown {
				t.Fatalf("InstanceShutdown = %v, %v; want %v (err %v)", shut, err, tt.wantShutdown, tt.wantErr)
			}
			md, err := in.InstanceMetadata(ctx, tt.node)
			if (err != nil) != tt.wantErr {
				t.Fatalf("InstanceMetadata err = %v, want err %v", err, tt.wantErr)
			}
			if err == nil && md.ProviderID[:len("kubevirt://")] != "kubevirt://" {
				t.Fatalf("providerID %q", md.ProviderID)
			}
		})
	}

	md, err := in.InstanceMetadata(ctx, node("worker-1", ""))
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "10.244.0.7"},
		{Type: corev1.NodeInternalIP, Address: "fd10:244::7"},
		{Type: corev1.NodeHostName, Address: "worker-1"},
	}
	if md.ProviderID != "kubevirt://worker-1" || md.InstanceType != "2c3Gi" || md.Zone != "zone-b" || md.Region != "region-1" ||
		!reflect.DeepEqual(md.NodeAddresses, want) {
		t.Fatalf("metadata %+v", md)
	}
	stopped, err := in.InstanceMetadata(ctx, node("n2", "kubevirt://worker-2"))
	if err != nil || len(stopped.NodeAddresses) != 0 || stopped.ProviderID != "kubevirt://worker-2" {
		t.Fatalf("stopped VM metadata %+v, %v", stopped, err)
	}

	noZones := newInstances(t, false, vm("worker-1", "alpha", nil), vmi("worker-1", "alpha", kubevirtv1.Running))
	md, err = noZones.InstanceMetadata(ctx, node("worker-1", ""))
	if err != nil || md.Zone != "" || md.Region != "" {
		t.Fatalf("zones disabled: %+v, %v", md, err)
	}
}

func TestInstanceType(t *testing.T) {
	req := resource.MustParse("1536Mi")
	tests := []struct {
		name string
		vm   *kubevirtv1.VirtualMachine
		want string
	}{
		{"guest memory and cores", vm("a", "alpha", nil), "2c3Gi"},
		{"sockets x cores x threads", vm("a", "alpha", func(v *kubevirtv1.VirtualMachine) {
			v.Spec.Template.Spec.Domain.CPU = &kubevirtv1.CPU{Sockets: 2, Cores: 2, Threads: 2}
		}), "8c3Gi"},
		{"memory from requests", vm("a", "alpha", func(v *kubevirtv1.VirtualMachine) {
			v.Spec.Template.Spec.Domain.Memory = nil
			v.Spec.Template.Spec.Domain.CPU = nil
			v.Spec.Template.Spec.Domain.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: req}
		}), "1c1536Mi"},
		{"instancetype wins", vm("a", "alpha", func(v *kubevirtv1.VirtualMachine) {
			v.Spec.Instancetype = &kubevirtv1.InstancetypeMatcher{Name: "u1.medium"}
		}), "u1.medium"},
		{"bad instancetype name falls back", vm("a", "alpha", func(v *kubevirtv1.VirtualMachine) {
			v.Spec.Instancetype = &kubevirtv1.InstancetypeMatcher{Name: "not/a label"}
		}), "2c3Gi"},
		{"nothing known", &kubevirtv1.VirtualMachine{}, ""},
	}
	for _, tt := range tests {
		if got := InstanceType(tt.vm); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
