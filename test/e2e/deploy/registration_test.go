package deploy_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tenantcloud/tenantcloud/test/chartrender"
)

// TestTenantChartRegistration: csiNode.registration picks how the driver registers with the
// kubelet. "sidecar" (the default) runs node-driver-registrar and leaves csi-node's
// registration off; "builtin" drops the sidecar and has csi-node serve the registration API
// in the kubelet's plugins_registry, telling the kubelet the socket's path on the node; any
// other value fails the install.
func TestTenantChartRegistration(t *testing.T) {
	const ds = release + "-csi-node"
	const nodeSocket = "--kubelet-registration-path=/var/lib/kubelet/plugins/csi.tenantcloud.io/csi.sock"
	for _, tc := range []struct {
		value      string
		containers []string
		builtin    bool
	}{
		{"", []string{"csi-node", "node-driver-registrar", "liveness-probe"}, false},
		{"sidecar", []string{"csi-node", "node-driver-registrar", "liveness-probe"}, false},
		{"builtin", []string{"csi-node", "liveness-probe"}, true},
	} {
		t.Run("registration="+tc.value, func(t *testing.T) {
			sets := tenantSets
			if tc.value != "" {
				sets = append(slices.Clone(tenantSets), "csiNode.registration="+tc.value)
			}
			objs := render(t, "tenantcloud-tenant", "kube-system", sets...)
			cs, _, err := unstructured.NestedSlice(find(t, objs, "DaemonSet", ds).Object, "spec", "template", "spec", "containers")
			if err != nil {
				t.Fatal(err)
			}
			var names, mounts []string
			for _, c := range cs {
				m, _ := c.(map[string]any)
				names = append(names, m["name"].(string))
				if m["name"] == "csi-node" {
					vms, _, _ := unstructured.NestedSlice(m, "volumeMounts")
					for _, vm := range vms {
						v, _ := vm.(map[string]any)
						mounts = append(mounts, v["name"].(string)+":"+v["mountPath"].(string))
					}
				}
			}
			if !slices.Equal(names, tc.containers) {
				t.Errorf("containers %v, want %v", names, tc.containers)
			}
			args := containerArgs(t, objs, "DaemonSet", ds, "csi-node")
			hasDir := slices.Contains(args, "--plugin-registration-dir=/registration")
			hasPath := slices.Contains(args, nodeSocket)
			hasMount := slices.Contains(mounts, "registration-dir:/registration")
			if hasDir != tc.builtin || hasPath != tc.builtin || hasMount != tc.builtin {
				t.Errorf("csi-node registration flags %v / mount %v, want built-in registration %v", args, mounts, tc.builtin)
			}
		})
	}
	t.Run("livenessProbe=false", func(t *testing.T) {
		objs := render(t, "tenantcloud-tenant", "kube-system", append(slices.Clone(tenantSets), "csiNode.registration=builtin", "csiNode.livenessProbe=false")...)
		cs, _, err := unstructured.NestedSlice(find(t, objs, "DaemonSet", ds).Object, "spec", "template", "spec", "containers")
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 {
			t.Fatalf("%d containers, want csi-node alone", len(cs))
		}
		if c, _ := cs[0].(map[string]any); c["livenessProbe"] != nil || c["ports"] != nil {
			t.Errorf("csi-node keeps a liveness probe or port without the sidecar: %v %v", c["livenessProbe"], c["ports"])
		}
	})
	t.Run("registration=bogus", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := chartrender.Template(ctx, helmBin(t), "tenantcloud-tenant", release, "kube-system",
			append(slices.Clone(tenantSets), "csiNode.registration=bogus")...)
		if err == nil || !strings.Contains(err.Error(), "csiNode.registration must be sidecar or builtin") {
			t.Errorf("helm template with csiNode.registration=bogus: %v, want the chart's refusal", err)
		}
	})
}
