package capi

import (
	"strconv"

	"k8s.io/apimachinery/pkg/api/equality"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// DefaultMachineDeployment applies what Cluster API's MachineDeployment defaulting webhook
// does on create, which cannot run against the test apiserver: the cluster-name label, the
// replica count (1, or the autoscaler min-size annotation when both min and max are set), a
// selector on the deployment name if none is given, the cluster-name label in selector and
// template, and the RollingUpdate strategy. It reports whether it changed md. The simulator
// applies it to MachineDeployments created without it, once, as an update.
func DefaultMachineDeployment(md *clusterv1.MachineDeployment) bool {
	before := md.DeepCopy()
	if md.Labels == nil {
		md.Labels = map[string]string{}
	}
	md.Labels[clusterv1.ClusterNameLabel] = md.Spec.ClusterName
	if md.Spec.Replicas == nil {
		md.Spec.Replicas = ptrTo(defaultReplicas(md.Annotations))
	}
	if md.Spec.Selector.MatchLabels == nil {
		md.Spec.Selector.MatchLabels = map[string]string{}
	}
	if md.Spec.Template.Labels == nil {
		md.Spec.Template.Labels = map[string]string{}
	}
	if md.Spec.Rollout.Strategy.Type == "" {
		md.Spec.Rollout.Strategy.Type = clusterv1.RollingUpdateMachineDeploymentStrategyType
	}
	if len(md.Spec.Selector.MatchLabels) == 0 && len(md.Spec.Selector.MatchExpressions) == 0 {
		md.Spec.Selector.MatchLabels[clusterv1.MachineDeploymentNameLabel] = md.Name
		md.Spec.Template.Labels[clusterv1.MachineDeploymentNameLabel] = md.Name
	}
	md.Spec.Selector.MatchLabels[clusterv1.ClusterNameLabel] = md.Spec.ClusterName
	md.Spec.Template.Labels[clusterv1.ClusterNameLabel] = md.Spec.ClusterName
	if md.Spec.Template.Spec.ClusterName == "" {
		md.Spec.Template.Spec.ClusterName = md.Spec.ClusterName
	}
	return !equality.Semantic.DeepEqual(before, md)
}

// defaultReplicas is the webhook's choice for a new MachineDeployment without replicas.
func defaultReplicas(annotations map[string]string) int32 {
	minS, okMin := annotations[clusterv1.AutoscalerMinSizeAnnotation]
	_, okMax := annotations[clusterv1.AutoscalerMaxSizeAnnotation]
	if okMin && okMax {
		if n, err := strconv.ParseInt(minS, 10, 32); err == nil {
			return int32(n)
		}
	}
	return 1
}

func ptrTo[T any](v T) *T { return &v }
