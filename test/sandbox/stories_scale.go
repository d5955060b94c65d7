package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

const webApp = "web"

// storyScale: a Deployment whose second replica fits on no existing node makes the real
// cluster-autoscaler grow the MachineDeployment; the new Node joins (initialised by the ccm,
// with its csi-node) and takes the pod. Scaled back down, the emptied Node is removed by the
// cluster-autoscaler and the MachineDeployment shrinks.
func (s *sandbox) storyScale(ctx context.Context) error {
	caBin := s.bin("cluster-autoscaler")
	if _, err := os.Stat(caBin); err != nil {
		// make sandbox builds it (make bin); without it the scale story cannot run at all.
		return fmt.Errorf("scale story: %s not built (hack/bin-cluster-autoscaler.sh): %w", caBin, err)
	}
	tenant := s.env.Tenant.Client
	// The tenant's Deployment and ReplicaSet controllers: real, from kube-controller-manager.
	if _, err := s.env.StartControllerManager(ctx, s.env.Tenant, "deployment", "replicaset"); err != nil {
		return fmt.Errorf("tenant kube-controller-manager: %w", err)
	}
	ok("real kube-controller-manager (deployment, replicaset controllers) running against the tenant")

	step("tenant: Deployment default/%s, 1 replica of 1.5 CPUs (the worker has 2)", webApp)
	labels := map[string]string{"app": webApp}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: webApp},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// No kubelet confirms a graceful deletion here: pods go at once.
					TerminationGracePeriodSeconds: ptr.To[int64](0),
					Containers: []corev1.Container{{Name: "app", Image: "app",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}},
				},
			},
		},
	}
	if err := tenant.Create(ctx, deploy); err != nil {
		return fmt.Errorf("creating Deployment default/%s: %w", webApp, err)
	}
	if _, err := s.waitWebPods(ctx, 1); err != nil {
		return err
	}

	cloudConfig := filepath.Join(s.logDir, "cluster-autoscaler-cloud-config.yaml")
	if err := os.WriteFile(cloudConfig, fmt.Appendf(nil, "address: %s\ngrpc_timeout: 10s\n", s.provider), 0o600); err != nil {
		return err
	}
	step("starting the real cluster-autoscaler (--cloud-provider=externalgrpc → autoscaler-provider %s; scale-down after 5s unneeded)", s.provider)
	ca, err := s.spawn("cluster-autoscaler", caBin,
		"--cloud-provider=externalgrpc", "--cloud-config="+cloudConfig,
		"--kubeconfig="+s.creds["cluster-autoscaler"].tenant, "--namespace=kube-system",
		"--leader-elect=false", "--write-status-configmap=false", "--address=127.0.0.1:0",
		"--scan-interval=1s", "--expander=random", "--max-node-provision-time=2m",
		"--scale-down-enabled=true", "--scale-down-delay-after-add=1s", "--scale-down-delay-after-delete=0s",
		"--scale-down-delay-after-failure=1s", "--scale-down-unneeded-time=5s", "--scale-down-unready-time=5s",
		"--node-delete-delay-after-taint=0s", "--unremovable-node-recheck-timeout=1s",
		"--skip-nodes-with-local-storage=false", "--skip-nodes-with-system-pods=false", "--v=2")
	if err != nil {
		return err
	}
	s.ca = ca

	step("tenant: scale Deployment default/%s to 2 replicas (the second fits on no existing node)", webApp)
	if err := s.scaleWeb(ctx, 2); err != nil {
		return err
	}
	if err := s.waitReplicas(ctx, 2, "growing"); err != nil {
		return err
	}
	nodes, err := s.waitNodes(ctx, 2)
	if err != nil {
		return err
	}
	if err := s.ensureCSINodes(ctx, nodes); err != nil {
		return err
	}
	if _, err := s.waitWebPods(ctx, 2); err != nil {
		return err
	}

	step("tenant: scale Deployment default/%s back to 1 replica (one Node becomes empty)", webApp)
	if err := s.scaleWeb(ctx, 1); err != nil {
		return err
	}
	if err := s.waitReplicas(ctx, 1, "shrinking"); err != nil {
		return err
	}
	var gone []string
	if err := poll(ctx, "the emptied Node leaving the tenant", func(ctx context.Context) (bool, error) {
		var list corev1.NodeList
		if err := tenant.List(ctx, &list); err != nil {
			return false, err
		}
		gone = gone[:0]
		for _, n := range nodes {
			if !slices.ContainsFunc(list.Items, func(m corev1.Node) bool { return m.Name == n.Name }) {
				gone = append(gone, n.Name)
			}
		}
		return len(gone) == 1, nil
	}); err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Name == gone[0] {
			vm, err := infra.VMNameFromProviderID(n.Spec.ProviderID)
			if err != nil {
				return err
			}
			if err := s.stopCSINode(vm); err != nil {
				return err
			}
			ok("Node %s removed (its VM %s deleted by Cluster API); its csi-node stopped with it", n.Name, vm)
		}
	}
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

// waitWebPods waits until n pods of the web Deployment are bound to Nodes and reports where.
func (s *sandbox) waitWebPods(ctx context.Context, n int) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := poll(ctx, fmt.Sprintf("%d pod(s) of Deployment default/%s scheduled", n, webApp), func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(); err != nil {
			return false, err
		}
		var list corev1.PodList
		if err := s.env.Tenant.Client.List(ctx, &list, client.InNamespace("default"), client.MatchingLabels{"app": webApp}); err != nil {
			return false, err
		}
		pods = slices.DeleteFunc(list.Items, func(p corev1.Pod) bool { return p.Spec.NodeName == "" || p.DeletionTimestamp != nil })
		return len(pods) == n && len(list.Items) == n, nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		ok("pod default/%s scheduled on %s (kube-scheduler)", p.Name, p.Spec.NodeName)
	}
	return pods, nil
}

// waitReplicas waits until cluster-autoscaler has set the MachineDeployment to n replicas.
func (s *sandbox) waitReplicas(ctx context.Context, n int32, verb string) error {
	md := &clusterv1.MachineDeployment{}
	key := client.ObjectKey{Namespace: infraNS, Name: mdName}
	if err := poll(ctx, fmt.Sprintf("cluster-autoscaler %s MachineDeployment %s/%s to %d replicas", verb, infraNS, mdName, n), func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(); err != nil {
			return false, err
		}
		if err := s.env.Management.Client.Get(ctx, key, md); err != nil {
			return false, err
		}
		return md.Spec.Replicas != nil && *md.Spec.Replicas == n, nil
	}); err != nil {
		return fmt.Errorf("%w; cluster-autoscaler log %s:\n%s", err, s.ca.LogFile, s.ca.Log(1500))
	}
	ok("cluster-autoscaler set MachineDeployment %s/%s to %d replicas", infraNS, mdName, n)
	return nil
}
