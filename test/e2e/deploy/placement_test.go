package deploy_test

import (
	"fmt"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestManagementChartPlacementAndProbe: nodeSelector, tolerations and affinity reach every
// management-side pod (an operator pins them to infrastructure nodes; test/harness/install
// pins them to its one management node), and csiController.livenessProbe=false drops the
// upstream livenessprobe sidecar together with the probe and port that depend on it (where
// that image cannot be pulled, the kubelet would otherwise restart a healthy csi-controller).
func TestManagementChartPlacementAndProbe(t *testing.T) {
	objs := render(t, "tenantcloud", "deploy-mgmt", append(slices.Clone(mgmtSets),
		"nodeSelector.node-role\\.example/infra=true", "tolerations[0].key=infra", "tolerations[0].operator=Exists",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
		"csiController.livenessProbe=false")...)
	var deployments int
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		deployments++
		spec, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
		sel, _ := spec["nodeSelector"].(map[string]any)
		tol, _ := spec["tolerations"].([]any)
		if fmt.Sprint(sel["node-role.example/infra"]) != "true" || len(tol) != 1 || spec["affinity"] == nil {
			t.Errorf("Deployment %s: nodeSelector %v, tolerations %v, affinity %v; want the values'", o.GetName(), sel, tol, spec["affinity"])
		}
	}
	if deployments != 4 {
		t.Errorf("%d Deployments, want ccm, csi-controller, autoscaler-provider and cluster-autoscaler", deployments)
	}
	cs, _, err := unstructured.NestedSlice(find(t, objs, "Deployment", release+"-csi-controller").Object, "spec", "template", "spec", "containers")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		m, _ := c.(map[string]any)
		names = append(names, m["name"].(string))
		if m["name"] == "csi-controller" {
			ports, _ := m["ports"].([]any)
			if m["livenessProbe"] != nil || len(ports) != 1 {
				t.Errorf("csi-controller keeps a liveness probe (%v) or the healthz port (%v) without the sidecar", m["livenessProbe"], ports)
			}
		}
	}
	if want := []string{"csi-controller", "csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"}; !slices.Equal(names, want) {
		t.Errorf("csi-controller pod containers %v, want %v", names, want)
	}
}
