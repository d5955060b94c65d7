package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// storyScale: a pod that fits on no existing node stays Unschedulable, the real
// cluster-autoscaler asks the autoscaler-provider to grow the MachineDeployment, and the new
// Node joins and takes the pod.
func (s *sandbox) storyScale(ctx context.Context) error {
	caBin := s.bin("cluster-autoscaler")
	if _, err := os.Stat(caBin); err != nil {
		skip("scale story skipped: %s not built (hack/bin-cluster-autoscaler.sh): %v", caBin, err)
		return nil
	}
	tenant := s.env.Tenant.Client
	newPod := func(name string) (*corev1.Pod, error) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}}},
		}
		if err := tenant.Create(ctx, pod); err != nil {
			return nil, fmt.Errorf("creating pod default/%s: %w", name, err)
		}
		return pod, nil
	}
	scheduledOn := func(ctx context.Context, pod *corev1.Pod) (string, error) {
		err := tenant.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Spec.NodeName, err
	}

	step("tenant: pod default/filler (1.5 of the worker's 2 CPUs)")
	filler, err := newPod("filler")
	if err != nil {
		return err
	}
	var node string
	if err := poll(ctx, "kube-scheduler binding default/filler to a node", func(ctx context.Context) (bool, error) {
		n, err := scheduledOn(ctx, filler)
		node = n
		return n != "", err
	}); err != nil {
		return err
	}
	ok("default/filler scheduled on %s", node)

	step("tenant: pod default/pending (another 1.5 CPUs: fits on no existing node)")
	pending, err := newPod("pending")
	if err != nil {
		return err
	}
	if err := poll(ctx, "kube-scheduler marking default/pending Unschedulable", func(ctx context.Context) (bool, error) {
		if err := tenant.Get(ctx, client.ObjectKeyFromObject(pending), pending); err != nil {
			return false, err
		}
		for _, c := range pending.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	ok("default/pending is Unschedulable (kube-scheduler)")

	cloudConfig := filepath.Join(s.logDir, "cluster-autoscaler-cloud-config.yaml")
	if err := os.WriteFile(cloudConfig, fmt.Appendf(nil, "address: %s\ngrpc_timeout: 10s\n", s.provider), 0o600); err != nil {
		return err
	}
	step("starting the real cluster-autoscaler (--cloud-provider=externalgrpc → autoscaler-provider %s)", s.provider)
	ca, err := s.spawn("cluster-autoscaler", caBin,
		"--cloud-provider=externalgrpc", "--cloud-config="+cloudConfig,
		"--kubeconfig="+s.env.Tenant.Kubeconfig, "--namespace=kube-system",
		"--leader-elect=false", "--write-status-configmap=false", "--address=127.0.0.1:0",
		"--scan-interval=1s", "--expander=random", "--max-node-provision-time=2m",
		"--scale-down-enabled=false", "--skip-nodes-with-local-storage=false",
		"--skip-nodes-with-system-pods=false", "--v=2")
	if err != nil {
		return err
	}
	s.ca = ca
	md := &clusterv1.MachineDeployment{}
	key := client.ObjectKey{Namespace: infraNS, Name: mdName}
	if err := poll(ctx, "cluster-autoscaler growing MachineDeployment "+infraNS+"/"+mdName+" to 2 replicas", func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(); err != nil {
			return false, err
		}
		if err := s.env.Management.Client.Get(ctx, key, md); err != nil {
			return false, err
		}
		return md.Spec.Replicas != nil && *md.Spec.Replicas >= 2, nil
	}); err != nil {
		return fmt.Errorf("%w; cluster-autoscaler log %s:\n%s", err, ca.log, tail(ca.log, 15))
	}
	ok("cluster-autoscaler scaled MachineDeployment %s/%s to %d replicas", infraNS, mdName, *md.Spec.Replicas)
	if _, err := s.waitNodes(ctx, 2); err != nil {
		return err
	}
	if err := poll(ctx, "kube-scheduler binding default/pending to the new node", func(ctx context.Context) (bool, error) {
		n, err := scheduledOn(ctx, pending)
		node = n
		return n != "", err
	}); err != nil {
		return err
	}
	ok("default/pending scheduled on the new node %s", node)
	return nil
}
