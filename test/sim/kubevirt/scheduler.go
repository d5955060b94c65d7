package kubevirt

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// LabelSchedulable is the label virt-handler puts on nodes it runs on; the simulator only
// schedules VMIs onto nodes carrying it with value "true", like virt-controller's node selector.
const LabelSchedulable = "kubevirt.io/schedulable"

// placement remembers which node each live VMI was bound to, so the scheduler can spread VMIs
// without waiting for the informer cache to catch up with its own bindings.
type placement struct {
	mu    sync.Mutex
	nodes map[types.NamespacedName]string
}

func newPlacement() *placement { return &placement{nodes: map[types.NamespacedName]string{}} }

func (p *placement) set(vmi types.NamespacedName, node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodes[vmi] = node
}

func (p *placement) forget(vmi types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.nodes, vmi)
}

// choose runs pick on the current load and records its choice for vmi in one step, so two
// VMIs scheduled concurrently see each other.
func (p *placement) choose(vmi types.NamespacedName, pick func(load map[string]int) (string, string)) (string, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	load := map[string]int{}
	for key, node := range p.nodes {
		if key != vmi {
			load[node]++
		}
	}
	node, why := pick(load)
	if node != "" {
		p.nodes[vmi] = node
	}
	return node, why
}

// pickNode does what kube-scheduler does for a virt-launcher pod, reduced to the predicates
// that matter here: the node is Ready, schedulable (not cordoned, carries LabelSchedulable),
// matches the VMI's nodeSelector and has no NoSchedule/NoExecute taint the VMI does not
// tolerate. Among fitting nodes it picks the least loaded, then by name, which spreads VMIs
// across the default one-node-per-zone layout. It returns "" and a kube-scheduler style
// message when nothing fits.
func pickNode(vmi *kubevirtv1.VirtualMachineInstance, nodes []corev1.Node, load map[string]int) (string, string) {
	var fit []string
	reasons := map[string]int{}
	for i := range nodes {
		if reason := unfit(vmi, &nodes[i]); reason != "" {
			reasons[reason]++
			continue
		}
		fit = append(fit, nodes[i].Name)
	}
	if len(fit) == 0 {
		return "", unschedulableMessage(len(nodes), reasons)
	}
	sort.Slice(fit, func(i, j int) bool {
		if load[fit[i]] != load[fit[j]] {
			return load[fit[i]] < load[fit[j]]
		}
		return fit[i] < fit[j]
	})
	return fit[0], ""
}

func unfit(vmi *kubevirtv1.VirtualMachineInstance, node *corev1.Node) string {
	if node.Labels[LabelSchedulable] != "true" {
		return "node(s) didn't match Pod's node affinity/selector"
	}
	if node.Spec.Unschedulable {
		return "node(s) were unschedulable"
	}
	if !nodeReady(node) {
		return "node(s) were not ready"
	}
	if len(vmi.Spec.NodeSelector) > 0 && !labels.SelectorFromSet(vmi.Spec.NodeSelector).Matches(labels.Set(node.Labels)) {
		return "node(s) didn't match Pod's node affinity/selector"
	}
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		if !tolerated(vmi.Spec.Tolerations, t) {
			return fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)
		}
	}
	return ""
}

func tolerated(tols []corev1.Toleration, t *corev1.Taint) bool {
	for i := range tols {
		if tols[i].ToleratesTaint(klog.Background(), t, true) {
			return true
		}
	}
	return false
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// unschedulableMessage mimics kube-scheduler's FailedScheduling message.
func unschedulableMessage(total int, reasons map[string]int) string {
	parts := make([]string, 0, len(reasons))
	for r, n := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(parts)
	msg := fmt.Sprintf("0/%d nodes are available", total)
	if len(parts) > 0 {
		msg += ": " + strings.Join(parts, ", ")
	}
	return msg + "."
}
