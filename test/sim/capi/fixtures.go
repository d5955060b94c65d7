package capi

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// KubevirtMachineTemplateAPIVersion is the CAPK API version the pinned CRDs serve.
const KubevirtMachineTemplateAPIVersion = infraGroup + "/v1alpha1"

// NewCluster returns a minimal Cluster API Cluster (the controllers refuse to act on objects
// of a cluster that does not exist).
func NewCluster(namespace, name string) *clusterv1.Cluster {
	return &clusterv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: clusterv1.ClusterSpec{
			InfrastructureRef: clusterv1.ContractVersionedObjectReference{APIGroup: infraGroup, Kind: "KubevirtCluster", Name: name},
		},
	}
}

// NewKubevirtMachineTemplate returns a CAPK template like CAPK's own examples: a worker VM with
// cores vCPUs and memory (a quantity, e.g. "4Gi") as both guest memory and memory request,
// run strategy Always, and the cluster-name label on its VMI template.
func NewKubevirtMachineTemplate(namespace, name, clusterName string, cores int64, memory string) *unstructured.Unstructured {
	t := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": KubevirtMachineTemplateAPIVersion,
		"kind":       kindKubevirtMT,
		"metadata":   map[string]any{"namespace": namespace, "name": name, "labels": map[string]any{clusterv1.ClusterNameLabel: clusterName}},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"virtualMachineBootstrapCheck": map[string]any{"checkStrategy": "none"},
			"virtualMachineTemplate": map[string]any{
				"metadata": map[string]any{"namespace": namespace},
				"spec": map[string]any{
					"runStrategy": "Always",
					"template": map[string]any{
						"metadata": map[string]any{"labels": map[string]any{infra.LabelClusterName: clusterName}},
						"spec": map[string]any{
							"domain": map[string]any{
								"cpu":       map[string]any{"cores": cores},
								"memory":    map[string]any{"guest": memory},
								"resources": map[string]any{"requests": map[string]any{"memory": memory}},
								"devices":   map[string]any{},
							},
						},
					},
				},
			},
		}}},
	}}
	return t
}

// NewMachineDeployment returns a worker MachineDeployment of clusterName using the CAPK
// template, with a pre-made bootstrap data secret name and the webhook defaults applied.
func NewMachineDeployment(namespace, name, clusterName, template string, replicas int32) *clusterv1.MachineDeployment {
	md := &clusterv1.MachineDeployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: clusterv1.MachineDeploymentSpec{
			ClusterName: clusterName,
			Replicas:    &replicas,
			Template: clusterv1.MachineTemplateSpec{
				Spec: clusterv1.MachineSpec{
					ClusterName: clusterName,
					Version:     "v1.36.2",
					Bootstrap:   clusterv1.Bootstrap{DataSecretName: ptrTo(fmt.Sprintf("%s-bootstrap", name))},
					InfrastructureRef: clusterv1.ContractVersionedObjectReference{
						APIGroup: infraGroup, Kind: kindKubevirtMT, Name: template,
					},
				},
			},
		},
	}
	DefaultMachineDeployment(md)
	return md
}
