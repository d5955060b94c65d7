package autoscaler_test

import (
	"context"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

// declareTemplateCapacity gives this test binary's management apiserver the
// KubevirtMachineTemplate status.capacity field (and status subresource) that CAPK's main
// branch has and the harness's CAPK v0.1.10 CRD lacks, so the simulated CAPK publishes the
// template capacity for scale from zero as a current CAPK would.
func declareTemplateCapacity(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	c := env.Management.Client
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: "kubevirtmachinetemplates.infrastructure.cluster.x-k8s.io"}, crd); err != nil {
		t.Fatal(err)
	}
	intOrString := apiextensionsv1.JSONSchemaProps{
		XIntOrString: true,
		AnyOf:        []apiextensionsv1.JSONSchemaProps{{Type: "integer"}, {Type: "string"}},
	}
	for i := range crd.Spec.Versions {
		v := &crd.Spec.Versions[i]
		v.Schema.OpenAPIV3Schema.Properties["status"] = apiextensionsv1.JSONSchemaProps{
			Type: "object",
			Properties: map[string]apiextensionsv1.JSONSchemaProps{"capacity": {
				Type:                 "object",
				AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &intOrString},
			}},
		}
		v.Subresources = &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}}
	}
	if err := c.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}
	// The apiserver switches to the new schema asynchronously: probe until a status sticks, so
	// that templates created afterwards keep what the simulator publishes.
	probe := &unstructured.Unstructured{}
	probe.SetAPIVersion(capi.KubevirtMachineTemplateAPIVersion)
	probe.SetKind("KubevirtMachineTemplate")
	probe.SetNamespace(ns)
	probe.SetName("status-probe")
	if err := c.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(probe), probe); err != nil {
			return false, err
		}
		_ = unstructured.SetNestedStringMap(probe.Object, map[string]string{"cpu": "1"}, "status", "capacity")
		if err := c.Status().Update(ctx, probe); err != nil {
			return false, nil
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(probe), probe); err != nil {
			return false, err
		}
		_, found, _ := unstructured.NestedMap(probe.Object, "status", "capacity")
		return found, nil
	})
	if err != nil {
		t.Fatalf("KubevirtMachineTemplate status never persisted: %v", err)
	}
	if err := c.Delete(ctx, probe); err != nil {
		t.Fatal(err)
	}
}
