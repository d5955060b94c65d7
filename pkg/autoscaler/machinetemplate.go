package autoscaler

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// machineTemplateGVK is CAPK's KubevirtMachineTemplate. CAPK has no Go types in this module,
// so it is read as unstructured; v1alpha1 is the served and storage version of its CRD.
var machineTemplateGVK = schema.GroupVersionKind{
	Group: "infrastructure.cluster.x-k8s.io", Version: "v1alpha1", Kind: "KubevirtMachineTemplate",
}

// templateSources is what the KubevirtMachineTemplate of a group says about its nodes.
type templateSources struct {
	// Status is status.capacity (CAPK publishes it for scale from zero); nil if absent.
	Status corev1.ResourceList
	// VM is derived from the VirtualMachine spec; nil if there is none.
	VM           corev1.ResourceList
	Architecture string
	// Problems are parts that could not be read; the others are still used.
	Problems []error
}

// machineTemplate reads the KubevirtMachineTemplate md's Machines are built from. The cache
// holds every template of the namespace (CAPK does not label them), so ownership rests on the
// reference from md, which passed the cluster checks; a template that names another cluster in
// its label is refused all the same. found is false when md references no such template.
func (v *view) machineTemplate(ctx context.Context, md *clusterv1.MachineDeployment) (src templateSources, found bool, err error) {
	ref := md.Spec.Template.Spec.InfrastructureRef
	if ref.APIGroup != machineTemplateGVK.Group || ref.Kind != machineTemplateGVK.Kind || ref.Name == "" {
		return src, false, nil
	}
	u := newMachineTemplate()
	if err := v.infra.Get(ctx, client.ObjectKey{Namespace: md.Namespace, Name: ref.Name}, u, noCopy); err != nil {
		if apierrors.IsNotFound(err) {
			return src, false, nil
		}
		return src, false, fmt.Errorf("reading KubevirtMachineTemplate %s: %w", ref.Name, err)
	}
	if c, ok := u.GetLabels()[infra.LabelClusterName]; ok && c != v.scope.ClusterName {
		return src, false, nil
	}

	if capacity, ok, _ := unstructured.NestedMap(u.Object, "status", "capacity"); ok {
		var perr error
		if src.Status, perr = CapacityFromTemplateStatus(capacity); perr != nil {
			src.Problems = append(src.Problems, fmt.Errorf("KubevirtMachineTemplate %s: %w", ref.Name, perr))
		}
	}
	raw, ok, _ := unstructured.NestedMap(u.Object, "spec", "template", "spec", "virtualMachineTemplate", "spec")
	if ok {
		spec := &kubevirtv1.VirtualMachineSpec{}
		// The cache object is shared; the converter only reads raw.
		if cerr := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, spec); cerr != nil {
			src.Problems = append(src.Problems, fmt.Errorf("KubevirtMachineTemplate %s: VM spec: %w", ref.Name, cerr))
		} else {
			src.VM = CapacityFromVMSpec(spec)
			if spec.Template != nil {
				src.Architecture = spec.Template.Spec.Architecture
			}
		}
	}
	return src, true, nil
}
