package deploy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestCSINodeChartRBAC runs the real csi-node binary with the tenant chart's rendered args and
// ConfigMap, as the chart's csi-node ServiceAccount bound to exactly its ClusterRole: it learns
// its node ID (the VM name) from its Node's providerID. Removing that one permission makes the
// start fail. csi-node holds no management credentials at all (pkg/config refuses them).
func TestCSINodeChartRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns, nodeName, vm = "kube-system", "csinode-w1", "csinode-vm"
	tenant := env.Tenant.Client
	must(t, tenant.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec: corev1.NodeSpec{ProviderID: infra.ProviderIDPrefix + vm}}))

	objs := render(t, "tenantcloud-tenant", ns, "clusterName="+simCluster, "infraNamespace="+simCluster,
		"tenantRBAC.ccm=false", "tenantRBAC.autoscalerProvider=false")
	name := release + "-csi-node"
	g, u := bindChartRole(t, ctx, env.Tenant, "tenant", ns, objs, "ClusterRole", "tenantcloud-"+ns+"-"+name)

	dir := t.TempDir()
	raw, ok, err := unstructuredString(find(t, objs, "ConfigMap", name).Object, "data", "config.yaml")
	if err != nil || !ok {
		t.Fatalf("csi-node ConfigMap has no config.yaml: %v", err)
	}
	cfg := map[string]any{}
	must(t, sigsyaml.Unmarshal([]byte(raw), &cfg))
	cfg["tenantKubeconfig"] = u.Kubeconfig // in the pod: the ServiceAccount's in-cluster credentials
	cfgPath := writeYAML(t, dir, "csi-node.yaml", cfg)
	sock := filepath.Join(dir, "csi.sock")
	args := chartrender.LocalArgs(containerArgs(t, objs, "DaemonSet", name, "csi-node"), map[string]string{
		"--config": cfgPath, "--endpoint": "unix://" + sock,
		"--kubelet-dir": t.TempDir(), "--device-dir": t.TempDir(),
		"--node-name": nodeName, // the DaemonSet's downward-API NODE_NAME
	})
	bin := filepath.Join(programs(t), "csi-node")

	var conn *grpc.ClientConn
	p := &proof{
		grants:   []*grant{g},
		clusters: []*harness.Cluster{env.Tenant},
		start: func(ctx context.Context) (*component, error) {
			c, err := startBinary(dir, "csi-node", bin, args...)
			if err != nil {
				return nil, err
			}
			conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			return c, err
		},
		reset: func(ctx context.Context) error { return conn.Close() },
		scenarios: []scenario{{"Start: node ID from the Node's providerID", func(ctx context.Context, c *component) error {
			var got string
			return c.await(ctx, "NodeGetInfo", func(ctx context.Context) (bool, error) {
				rsp, err := csi.NewNodeClient(conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
				if err != nil {
					return false, err
				}
				if got = rsp.GetNodeId(); got != vm {
					return false, fmt.Errorf("node ID %q, want %q", got, vm)
				}
				return true, nil
			})
		}}},
	}
	p.run(t, ctx)
}

func writeYAML(t *testing.T, dir, name string, v any) string {
	t.Helper()
	data, err := sigsyaml.Marshal(v)
	must(t, err)
	path := filepath.Join(dir, name)
	must(t, os.WriteFile(path, data, 0o600))
	return path
}
