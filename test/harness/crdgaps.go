package harness

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const kubevirtMachineTemplateCRD = "kubevirtmachinetemplates.infrastructure.cluster.x-k8s.io"

// AddKubevirtMachineTemplateCapacity upgrades c's KubevirtMachineTemplate CRD with the
// status.capacity field and status subresource that CAPK added after v0.1.10 (the version
// make bin installs, whose CRD has no status at all, so the apiserver would prune the field).
// Tests of scale from zero call it to run against a current CAPK. It returns once a status
// written to a probe template persists; calling it again is harmless.
func (c *Cluster) AddKubevirtMachineTemplateCapacity(ctx context.Context) error {
	intOrString := apiextensionsv1.JSONSchemaProps{
		XIntOrString: true,
		AnyOf:        []apiextensionsv1.JSONSchemaProps{{Type: "integer"}, {Type: "string"}},
	}
	status := apiextensionsv1.JSONSchemaProps{
		Type: "object",
		Properties: map[string]apiextensionsv1.JSONSchemaProps{"capacity": {
			Type:                 "object",
			AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &intOrString},
		}},
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Client.Get(ctx, client.ObjectKey{Name: kubevirtMachineTemplateCRD}, crd); err != nil {
			return err
		}
		for i := range crd.Spec.Versions {
			v := &crd.Spec.Versions[i]
			v.Schema.OpenAPIV3Schema.Properties["status"] = status
			v.Subresources = &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}}
		}
		return c.Client.Update(ctx, crd)
	})
	if err != nil {
		return fmt.Errorf("%s: adding status.capacity to %s: %w", c.Name, kubevirtMachineTemplateCRD, err)
	}

	// The apiserver switches to the new schema asynchronously: write a status to a probe
	// template until it sticks, so templates written afterwards keep what they publish.
	var storage string
	for _, v := range crd.Spec.Versions {
		if v.Storage {
			storage = v.Name
		}
	}
	probe := &unstructured.Unstructured{}
	probe.SetAPIVersion(crd.Spec.Group + "/" + storage)
	probe.SetKind(crd.Spec.Names.Kind)
	probe.SetNamespace("default")
	probe.SetGenerateName("status-probe-")
	if err := c.Client.Create(ctx, probe); err != nil {
		return fmt.Errorf("%s: creating a probe KubevirtMachineTemplate: %w", c.Name, err)
	}
	defer func() { _ = c.Client.Delete(context.WithoutCancel(ctx), probe) }()
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(probe), probe); err != nil {
			return false, err
		}
		_ = unstructured.SetNestedStringMap(probe.Object, map[string]string{"cpu": "1"}, "status", "capacity")
		if err := c.Client.Status().Update(ctx, probe); err != nil {
			return false, nil // the status subresource is not served yet, or a conflict
		}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(probe), probe); err != nil {
			return false, err
		}
		_, found, _ := unstructured.NestedMap(probe.Object, "status", "capacity")
		return found, nil
	})
	if err != nil {
		return fmt.Errorf("%s: KubevirtMachineTemplate status never persisted: %w", c.Name, err)
	}
	return nil
}
