package autoscaler

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

func TestTemplateNode(t *testing.T) {
	in := TemplateInput{
		Name: "workers",
		Annotations: map[string]string{
			AnnotationCapacityLabels: "example.com/pool=fast, bad label=x ,kubernetes.io/arch=arm64",
			AnnotationCapacityTaints: "dedicated=ml:NoSchedule,broken,gpu:PreferNoSchedule",
		},
		MachineLabels: map[string]string{
			"node-role.kubernetes.io/worker":        "",
			"node.cluster.x-k8s.io/pool":            "a",
			"team.node.cluster.x-k8s.io/owner":      "b",
			"cluster.x-k8s.io/deployment-name":      "workers", // Cluster API never syncs this to Nodes
			"app":                                   "x",
			"evil.node.cluster.x-k8s.io.evil.com/x": "y",
		},
		MachineTaints: []clusterv1.MachineTaint{
			{Key: "dedicated", Value: "ml", Effect: corev1.TaintEffectNoSchedule}, // duplicate of the annotation
			{Key: "zone-b", Effect: corev1.TaintEffectNoExecute},
		},
		FailureDomain: "rack-1",
		Capacity:      rl("cpu", "4", "memory", "8Gi"),
	}
	node, problems, err := TemplateNode(in)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		"kubernetes.io/arch":               "arm64", // the operator's annotation wins
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/hostname":           "workers-template",
		"topology.kubernetes.io/zone":      "rack-1",
		"node-role.kubernetes.io/worker":   "",
		"node.cluster.x-k8s.io/pool":       "a",
		"team.node.cluster.x-k8s.io/owner": "b",
		"example.com/pool":                 "fast",
	}
	if !reflect.DeepEqual(node.Labels, wantLabels) {
		t.Errorf("labels\n got %v\nwant %v", node.Labels, wantLabels)
	}
	wantTaints := []corev1.Taint{
		{Key: "dedicated", Value: "ml", Effect: corev1.TaintEffectNoSchedule},
		{Key: "gpu", Effect: corev1.TaintEffectPreferNoSchedule},
		{Key: "zone-b", Effect: corev1.TaintEffectNoExecute},
	}
	if !reflect.DeepEqual(node.Spec.Taints, wantTaints) {
		t.Errorf("taints\n got %v\nwant %v", node.Spec.Taints, wantTaints)
	}
	if len(problems) != 2 || !strings.Contains(problems[0].Error(), "bad label") || !strings.Contains(problems[1].Error(), "broken") {
		t.Errorf("problems: %v", problems)
	}
	wantCap := rl("cpu", "4", "memory", "8Gi", "pods", "110")
	if !equalLists(node.Status.Capacity, wantCap) || !equalLists(node.Status.Allocatable, wantCap) {
		t.Errorf("capacity %v allocatable %v, want %v", node.Status.Capacity, node.Status.Allocatable, wantCap)
	}
	if len(node.Status.Conditions) != 1 || node.Status.Conditions[0].Type != corev1.NodeReady || node.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("conditions: %v", node.Status.Conditions)
	}
	if node.Name != "workers-template" || node.Spec.ProviderID != "" {
		t.Errorf("name %q providerID %q", node.Name, node.Spec.ProviderID)
	}
}

func TestTemplateNodeDefaultsAndRefusals(t *testing.T) {
	node, _, err := TemplateNode(TemplateInput{Name: "g", Architecture: "s390x",
		Capacity: rl("cpu", "1", "memory", "1Gi", "pods", "20")})
	if err != nil {
		t.Fatal(err)
	}
	if node.Labels["kubernetes.io/arch"] != "s390x" || !equalLists(node.Status.Capacity, rl("cpu", "1", "memory", "1Gi", "pods", "20")) {
		t.Errorf("got %v %v", node.Labels, node.Status.Capacity)
	}
	if _, ok := node.Labels[corev1.LabelTopologyZone]; ok {
		t.Error("no failure domain must mean no zone label")
	}
	for _, c := range []corev1.ResourceList{rl("cpu", "1"), rl("memory", "1Gi"), rl("cpu", "0", "memory", "1Gi")} {
		if _, _, err := TemplateNode(TemplateInput{Name: "g", Capacity: c}); !errors.Is(err, ErrNoCapacity) {
			t.Errorf("capacity %v: want ErrNoCapacity, got %v", c, err)
		}
	}
}

func TestParseTaintsAnnotation(t *testing.T) {
	tests := []struct {
		in       string
		want     []corev1.Taint
		problems int
	}{
		{"", nil, 0},
		{"a=b:NoSchedule", []corev1.Taint{{Key: "a", Value: "b", Effect: corev1.TaintEffectNoSchedule}}, 0},
		{"example.com/a:NoExecute", []corev1.Taint{{Key: "example.com/a", Effect: corev1.TaintEffectNoExecute}}, 0},
		{"a=b", nil, 1},
		{"a=b:Sometimes", nil, 1},
		{"a b=c:NoSchedule", nil, 1},
		{"a=b c:NoSchedule", nil, 1},
		{"a:NoSchedule,a:NoSchedule", []corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoSchedule}}, 0},
	}
	for _, tt := range tests {
		got, problems := ParseTaintsAnnotation(tt.in)
		if !reflect.DeepEqual(got, tt.want) || len(problems) != tt.problems {
			t.Errorf("%q: got %v, %v; want %v and %d problems", tt.in, got, problems, tt.want, tt.problems)
		}
	}
}

func TestSyncedToNode(t *testing.T) {
	for key, want := range map[string]bool{
		"node-role.kubernetes.io/worker":         true,
		"node-restriction.kubernetes.io/x":       true,
		"a.node-restriction.kubernetes.io/x":     true,
		"node.cluster.x-k8s.io/x":                true,
		"b.node.cluster.x-k8s.io/x":              true,
		"node.cluster.x-k8s.io.evil.com/x":       false,
		"xnode.cluster.x-k8s.io/x":               false,
		"cluster.x-k8s.io/deployment-name":       false,
		"kubernetes.io/hostname":                 false,
		"plain":                                  false,
		"sub.node-role.kubernetes.io/controlled": false,
	} {
		if got := SyncedToNode(key); got != want {
			t.Errorf("SyncedToNode(%q) = %v, want %v", key, got, want)
		}
	}
}
