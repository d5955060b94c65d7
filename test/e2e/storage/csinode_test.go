package storage

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestCSINodeRunsOnEveryNode: the chart's DaemonSet put one csi-node pod on each real node,
// from the image pulled from the registry, with the kubelet directory mounted Bidirectional,
// and the kubelet registered the driver with the node's VM as node ID.
func TestCSINodeRunsOnEveryNode(t *testing.T) {
	w := requireWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Logf("nodes started → csi-node registered on both: %s", w.ready.Round(time.Millisecond))
	pods := &corev1.PodList{}
	if err := env.Tenant.Client.List(ctx, pods, client.InNamespace(chartNS), client.MatchingLabels{"app.kubernetes.io/component": "csi-node"}); err != nil {
		t.Fatal(err)
	}
	on := map[string]bool{}
	for _, p := range pods.Items {
		on[p.Spec.NodeName] = true
		if p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s on %s is %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		}
		c := p.Spec.Containers[0]
		if c.Image != w.csiNode {
			t.Errorf("pod %s runs %s, want %s", p.Name, c.Image, w.csiNode)
		}
		bidirectional := false
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/var/lib/kubelet" && m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
				bidirectional = true
			}
		}
		if !bidirectional {
			t.Errorf("pod %s does not mount /var/lib/kubelet Bidirectional: %v", p.Name, c.VolumeMounts)
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.ImageID == "" {
				t.Errorf("pod %s container %s has no pulled image ID", p.Name, s.Name)
			}
		}
	}
	for _, n := range w.nodes {
		if !on[n.Name] {
			t.Errorf("no csi-node pod on %s", n.Name)
		}
		if id, err := driverNodeID(ctx, n.Name); err != nil || id != n.Name {
			t.Errorf("CSINode %s: driver node ID %q (%v), want %s", n.Name, id, err, n.Name)
		}
	}
}
