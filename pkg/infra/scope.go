package infra

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Labels and annotations shared with Cluster API and CAPK (facts from their sources).
const (
	// LabelClusterName is set by Cluster API/CAPK on Machines, MachineSets, MachineDeployments,
	// VMs and the VMI template; KubeVirt copies VMI labels onto the virt-launcher pod.
	LabelClusterName = "cluster.x-k8s.io/cluster-name"
	// LabelRole is set by CAPK on VMs: "worker" or "control-plane".
	LabelRole = "cluster.x-k8s.io/role"
	// RoleWorker is the LabelRole value of worker VMs.
	RoleWorker = "worker"
	// ProviderIDPrefix is the scheme CAPK gives tenant Nodes: kubevirt://<vm-name>.
	ProviderIDPrefix = "kubevirt://"
)

// Ownership marks carried by every infra object tenantcloud creates.
const (
	// LabelManagedBy is the well-known managed-by label; ManagedByValue is ours.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "tenantcloud"
	// LabelComponent names the tenantcloud program that created the object.
	LabelComponent = "tenantcloud.io/component"
	// AnnotationCluster repeats the cluster name in an annotation: labels can be edited by
	// anyone with patch rights, and both must agree for an object to count as ours.
	AnnotationCluster = "tenantcloud.io/cluster"
)

// Scope identifies one tenant: its infra namespace and Cluster API cluster name.
type Scope struct {
	Namespace   string
	ClusterName string
}

// Validate reports a scope that cannot be used to select anything safely.
func (s Scope) Validate() error {
	if errs := validation.IsDNS1123Label(s.Namespace); len(errs) > 0 {
		return fmt.Errorf("infra namespace %q: %s", s.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(s.ClusterName); len(errs) > 0 || s.ClusterName == "" {
		return fmt.Errorf("cluster name %q: not a non-empty label value", s.ClusterName)
	}
	return nil
}

// ClusterSelector selects the objects Cluster API and CAPK label with this cluster's name.
func (s Scope) ClusterSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelClusterName: s.ClusterName})
}

// OwnedSelector selects the objects tenantcloud created for this cluster.
func (s Scope) OwnedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelClusterName: s.ClusterName, LabelManagedBy: ManagedByValue})
}

// OwnedLabels are the labels every infra object created by component carries. Callers may add
// their own keys to the returned map.
func (s Scope) OwnedLabels(component string) map[string]string {
	return map[string]string{
		LabelClusterName: s.ClusterName,
		LabelManagedBy:   ManagedByValue,
		LabelComponent:   component,
	}
}

// OwnedAnnotations are the annotations every infra object created by tenantcloud carries.
func (s Scope) OwnedAnnotations() map[string]string {
	return map[string]string{AnnotationCluster: s.ClusterName}
}

// InCluster reports whether obj lives in the tenant namespace and carries this cluster's
// name label: the check for objects Cluster API/CAPK create (VMs, VMIs, Machines, ...).
func (s Scope) InCluster(obj client.Object) bool {
	return obj.GetNamespace() == s.Namespace && obj.GetLabels()[LabelClusterName] == s.ClusterName
}

// Owns reports whether obj was created by tenantcloud for this tenant: in scope, labelled as
// managed by us, and annotated with the same cluster.
func (s Scope) Owns(obj client.Object) bool {
	return s.InCluster(obj) &&
		obj.GetLabels()[LabelManagedBy] == ManagedByValue &&
		obj.GetAnnotations()[AnnotationCluster] == s.ClusterName
}

// VMNameFromProviderID extracts the VM name from a tenant Node's providerID. The input is
// tenant-controlled, so anything but kubevirt://<dns-1123-subdomain> is refused.
func VMNameFromProviderID(providerID string) (string, error) {
	name, ok := strings.CutPrefix(providerID, ProviderIDPrefix)
	if !ok {
		return "", fmt.Errorf("providerID %q: want prefix %q", providerID, ProviderIDPrefix)
	}
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("providerID %q: %w", providerID, err)
	}
	return name, nil
}

// ProviderID is the providerID CAPK gives the tenant Node backed by VM vmName.
func ProviderID(vmName string) string { return ProviderIDPrefix + vmName }

// ValidateName checks that a tenant-supplied object name is a DNS-1123 subdomain, which rules
// out path separators, traversal and unicode before the name reaches any API path.
func ValidateName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("invalid name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}
