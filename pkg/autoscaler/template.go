package autoscaler

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// TemplateInput is everything a template node is built from, already read from the
// MachineDeployment and its infrastructure template.
type TemplateInput struct {
	// Name is the MachineDeployment name; the node is called "<Name>-template".
	Name string
	// Annotations are the MachineDeployment's (capacity labels and taints).
	Annotations map[string]string
	// MachineLabels are spec.template.metadata.labels; the ones Cluster API syncs onto Nodes
	// are copied.
	MachineLabels map[string]string
	// MachineTaints are spec.template.spec.taints, which Cluster API puts on new Nodes.
	MachineTaints []clusterv1.MachineTaint
	// FailureDomain is spec.template.spec.failureDomain; it becomes the zone label.
	FailureDomain string
	// Architecture is the VM's guest architecture ("" means amd64, KubeVirt's default).
	Architecture string
	// Capacity is the merged capacity; cpu and memory must be present.
	Capacity corev1.ResourceList
}

// ErrNoCapacity means the template's cpu or memory is unknown.
var ErrNoCapacity = errors.New("cpu and memory capacity unknown")

// TemplateNode builds the Node cluster-autoscaler simulates when it scales a group up, from
// zero in particular. Malformed label or taint entries are skipped and reported in problems;
// missing cpu or memory is ErrNoCapacity, because a node without them would make every
// simulation wrong.
func TemplateNode(in TemplateInput) (node *corev1.Node, problems []error, err error) {
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := in.Capacity[r]; !ok || q.IsZero() {
			return nil, nil, fmt.Errorf("%w: no %s from annotations, KubevirtMachineTemplate status or VM spec", ErrNoCapacity, r)
		}
	}
	name := in.Name + "-template"
	capacity := maps.Clone(in.Capacity)
	if _, ok := capacity[corev1.ResourcePods]; !ok {
		capacity[corev1.ResourcePods] = *resource.NewQuantity(defaultMaxPods, resource.DecimalSI)
	}

	arch := in.Architecture
	if arch == "" {
		arch = "amd64"
	}
	labels := map[string]string{
		corev1.LabelArchStable: arch,
		corev1.LabelOSStable:   "linux",
		corev1.LabelHostname:   name,
	}
	if in.FailureDomain != "" {
		labels[corev1.LabelTopologyZone] = in.FailureDomain
	}
	for k, v := range in.MachineLabels {
		if SyncedToNode(k) {
			labels[k] = v
		}
	}
	annLabels, labelProblems := ParseLabelsAnnotation(in.Annotations[AnnotationCapacityLabels])
	maps.Copy(labels, annLabels) // the operator's word wins
	problems = append(problems, labelProblems...)

	taints, taintProblems := ParseTaintsAnnotation(in.Annotations[AnnotationCapacityTaints])
	problems = append(problems, taintProblems...)
	for _, t := range in.MachineTaints {
		taints = appendTaint(taints, corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect})
	}

	node = &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: maps.Clone(capacity),
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				Reason: "KubeletReady", Message: "template node of a node group",
			}},
		},
	}
	return node, problems, nil
}

// SyncedToNode reports whether Cluster API copies a Machine label of this key onto the Node:
// node-role.kubernetes.io/*, and keys under node-restriction.kubernetes.io or
// node.cluster.x-k8s.io (or their subdomains). Only those belong on a template node; a label
// real nodes never get would let the simulation schedule pods that then stay pending.
func SyncedToNode(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	if prefix == "node-role.kubernetes.io" {
		return true
	}
	for _, domain := range []string{"node-restriction.kubernetes.io", "node.cluster.x-k8s.io"} {
		if prefix == domain || strings.HasSuffix(prefix, "."+domain) {
			return true
		}
	}
	return false
}

// ParseLabelsAnnotation parses "key1=value1,key2=value2".
func ParseLabelsAnnotation(s string) (map[string]string, []error) {
	out := map[string]string{}
	var problems []error
	for _, item := range splitList(s) {
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			problems = append(problems, fmt.Errorf("annotation %s: %q is not key=value", AnnotationCapacityLabels, item))
			continue
		}
		if msgs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(msgs) > 0 {
			problems = append(problems, fmt.Errorf("annotation %s: %q: %s", AnnotationCapacityLabels, item, strings.Join(msgs, "; ")))
			continue
		}
		out[k] = v
	}
	return out, problems
}

// ParseTaintsAnnotation parses "key=value:Effect,key2:Effect". The effect is required: a Node
// taint without one is invalid.
func ParseTaintsAnnotation(s string) ([]corev1.Taint, []error) {
	var out []corev1.Taint
	var problems []error
	for _, item := range splitList(s) {
		t, err := parseTaint(item)
		if err != nil {
			problems = append(problems, fmt.Errorf("annotation %s: %w", AnnotationCapacityTaints, err))
			continue
		}
		out = appendTaint(out, t)
	}
	return out, problems
}

func parseTaint(s string) (corev1.Taint, error) {
	kv, effect, ok := strings.Cut(s, ":")
	if !ok {
		return corev1.Taint{}, fmt.Errorf("%q: want key[=value]:Effect", s)
	}
	switch e := corev1.TaintEffect(effect); e {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
	default:
		return corev1.Taint{}, fmt.Errorf("%q: effect %q is not NoSchedule, PreferNoSchedule or NoExecute", s, effect)
	}
	key, value, _ := strings.Cut(kv, "=")
	msgs := validation.IsQualifiedName(key)
	if value != "" {
		msgs = append(msgs, validation.IsValidLabelValue(value)...)
	}
	if len(msgs) > 0 {
		return corev1.Taint{}, fmt.Errorf("%q: %s", s, strings.Join(msgs, "; "))
	}
	return corev1.Taint{Key: key, Value: value, Effect: corev1.TaintEffect(effect)}, nil
}

// appendTaint adds t unless a taint with the same key and effect is there (Node taints are
// unique by key and effect).
func appendTaint(taints []corev1.Taint, t corev1.Taint) []corev1.Taint {
	for _, have := range taints {
		if have.Key == t.Key && have.Effect == t.Effect {
			return taints
		}
	}
	return append(taints, t)
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
