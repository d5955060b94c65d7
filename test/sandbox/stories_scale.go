package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

const webApp = "web"

// webCPU is what one web pod requests: three quarters of a worker's CPUs (the VM template has
// as many cores as this machine, which a real node reports), so two never share a node.
func webCPU() *resource.Quantity {
	return resource.NewMilliQuantity(int64(workerCores())*750, resource.DecimalSI)
}

// storyScale: a Deployment with a pod for each worker runs; scaled up by one, the new pod fits
// on no node, so the chart's cluster-autoscaler pod grows the MachineDeployment, Cluster API creates
// a worker VM, its real node joins (initialised by the ccm, with its csi-node pod) and runs
// the pod. Scaled back down, the emptied Node is removed by the cluster-autoscaler and the
// MachineDeployment shrinks.
func (s *sandbox) storyScale(ctx context.Context) error {
	tenant := s.env.Tenant.Client
	cpu := webCPU()
	labels := map[string]string{"app": webApp}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: webApp},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{Name: "app", Image: node.PauseImage, ImagePullPolicy: corev1.PullNever,
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: *cpu, corev1.ResourceMemory: resource.MustParse("64Mi")}}}},
				},
			},
		},
	}
	step("user: kubectl create Deployment default/%s, 2 replicas of %s CPUs each (a worker has %d: one per node)", webApp, cpu, workerCores())
	t0 := time.Now()
	if err := tenant.Create(ctx, deploy); err != nil {
		return fmt.Errorf("creating Deployment default/%s: %w", webApp, err)
	}
	if _, err := s.waitWebPods(ctx, 2); err != nil {
		return err
	}
	ok("2 pods Running, one per node (took %s)", since(t0))

	step("user: kubectl scale deployment/%s --replicas=3 (the third pod fits on no node)", webApp)
	t0 = time.Now()
	if err := s.scaleWeb(ctx, 3); err != nil {
		return err
	}
	if err := s.waitReplicas(ctx, 3, "growing"); err != nil {
		return err
	}
	ok("cluster-autoscaler: TriggeredScaleUp, MachineDeployment %s/%s → 3 replicas (took %s)", infraNS, mdName, since(t0))
	nodes, err := s.waitNodes(ctx, 3)
	if err != nil {
		return err
	}
	if err := s.waitCSINodes(ctx, nodes); err != nil {
		return err
	}
	pods, err := s.waitWebPods(ctx, 3)
	if err != nil {
		return err
	}
	ok("scale-up done: the new node runs the third pod, %s after the user scaled", since(t0))

	step("user: kubectl scale deployment/%s --replicas=2 (one node becomes empty)", webApp)
	t0 = time.Now()
	if err := s.scaleWeb(ctx, 2); err != nil {
		return err
	}
	if err := s.waitReplicas(ctx, 2, "shrinking"); err != nil {
		return err
	}
	var gone string
	if err := poll(ctx, "the emptied Node leaving the tenant", func(ctx context.Context) (bool, error) {
		var list corev1.NodeList
		if err := tenant.List(ctx, &list); err != nil {
			return false, err
		}
		// Gone from the tenant, and its real node (if it had one) stopped with its VM.
		for _, n := range nodes {
			if !slices.ContainsFunc(list.Items, func(m corev1.Node) bool { return m.Name == n.Name }) && s.workers.node(n.Name) == nil {
				gone = n.Name
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	if slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Spec.NodeName == gone }) {
		note("the web pod that ran on %s was deleted by the scale-down of the Deployment before the node went", gone)
	}
	ok("scale-down done: Node %s drained and removed by cluster-autoscaler, its Machine and VM deleted by Cluster API (took %s)", gone, since(t0))
	return nil
}

// scaleWeb sets the web Deployment's replicas.
func (s *sandbox) scaleWeb(ctx context.Context, n int32) error {
	d := &appsv1.Deployment{}
	return poll(ctx, fmt.Sprintf("scaling Deployment default/%s to %d", webApp, n), func(ctx context.Context) (bool, error) {
		if err := s.env.Tenant.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: webApp}, d); err != nil {
			return false, err
		}
		d.Spec.Replicas = ptr.To(n)
		err := s.env.Tenant.Client.Update(ctx, d)
		return err == nil, err
	})
}

// waitWebPods waits until n pods of the web Deployment run (on a real node) or are bound (on
// a simulated one, where nothing runs), and reports where.
func (s *sandbox) waitWebPods(ctx context.Context, n int) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := poll(ctx, fmt.Sprintf("%d pod(s) of Deployment default/%s running", n, webApp), func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(ctx); err != nil {
			return false, err
		}
		var list corev1.PodList
		if err := s.env.Tenant.Client.List(ctx, &list, client.InNamespace("default"), client.MatchingLabels{"app": webApp}); err != nil {
			return false, err
		}
		pods = slices.DeleteFunc(list.Items, func(p corev1.Pod) bool {
			if p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
				return true
			}
			return s.workers.node(p.Spec.NodeName) != nil && p.Status.Phase != corev1.PodRunning
		})
		return len(pods) == n && len(list.Items) == n, nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		if !s.seen["pod/"+p.Name] {
			s.seen["pod/"+p.Name] = true
			if s.workers.node(p.Spec.NodeName) != nil {
				ok("pod default/%s Running on %s (real node)", p.Name, p.Spec.NodeName)
			} else {
				note("pod default/%s bound to %s, a simulated node: nothing runs it", p.Name, p.Spec.NodeName)
			}
		}
	}
	return pods, nil
}

// waitReplicas waits until cluster-autoscaler has set the MachineDeployment to n replicas.
func (s *sandbox) waitReplicas(ctx context.Context, n int32, verb string) error {
	md := &clusterv1.MachineDeployment{}
	key := client.ObjectKey{Namespace: infraNS, Name: mdName}
	if err := poll(ctx, fmt.Sprintf("cluster-autoscaler %s MachineDeployment %s/%s to %d replicas", verb, infraNS, mdName, n), func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(ctx); err != nil {
			return false, err
		}
		if err := s.env.Management.Client.Get(ctx, key, md); err != nil {
			return false, err
		}
		return md.Spec.Replicas != nil && *md.Spec.Replicas == n, nil
	}); err != nil {
		return fmt.Errorf("%w (cluster-autoscaler's log: %s on %s)", err, filepath.Join(s.mgmt.Dir, "pod-logs"), mgmtNode)
	}
	return nil
}
