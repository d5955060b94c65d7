package deploy_test

import (
	"context"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// containerArgs returns the args of container in the rendered Deployment or DaemonSet name.
func containerArgs(t *testing.T, objs []*unstructured.Unstructured, kind, name, container string) []string {
	t.Helper()
	args, err := chartrender.ContainerArgs(objs, kind, name, container)
	if err != nil {
		t.Fatal(err)
	}
	return args
}

// localConfig writes the chart's rendered config Secret to dir with the kubeconfig paths
// pointing at the given files (in a pod they are the ServiceAccount's in-cluster credentials
// and the mounted tenant kubeconfig Secret).
func localConfig(t *testing.T, objs []*unstructured.Unstructured, dir, infraKubeconfig, tenantKubeconfig string) string {
	t.Helper()
	raw, ok, err := unstructuredString(find(t, objs, "Secret", release+"-config").Object, "stringData", "config.yaml")
	if err != nil || !ok {
		t.Fatalf("config Secret has no stringData config.yaml: %v", err)
	}
	cfg := map[string]any{}
	if err := sigsyaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["infraKubeconfig"], cfg["tenantKubeconfig"] = infraKubeconfig, tenantKubeconfig
	return writeYAML(t, dir, "config.yaml", cfg)
}

// bindChartRole creates the rendered Role/ClusterRole named name and the binding of the same
// name on cluster c (namespaced ones in ns), gives the bound ServiceAccount's username a
// client certificate, and returns the grant the least-privilege proof varies plus the user.
func bindChartRole(t *testing.T, ctx context.Context, c *harness.Cluster, clusterName, ns string, objs []*unstructured.Unstructured, kind, name string) (*grant, *harness.User) {
	t.Helper()
	bindingKind := map[string]string{"Role": "RoleBinding", "ClusterRole": "ClusterRoleBinding"}[kind]
	binding := &rbacv1.RoleBinding{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, bindingKind, name).Object, binding); err != nil {
		t.Fatal(err)
	}
	if len(binding.Subjects) != 1 || binding.Subjects[0].Kind != rbacv1.ServiceAccountKind {
		t.Fatalf("%s %s: want one ServiceAccount subject, got %v", bindingKind, name, binding.Subjects)
	}
	saNS := binding.Subjects[0].Namespace
	if saNS == "" {
		saNS = ns
	}
	user := serviceAccountUser(saNS, binding.Subjects[0].Name)

	var role client.Object
	var rules []rbacv1.PolicyRule
	if kind == "Role" {
		r := &rbacv1.Role{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, kind, name).Object, r); err != nil {
			t.Fatal(err)
		}
		r.Namespace, rules, role = ns, r.Rules, r
	} else {
		r := &rbacv1.ClusterRole{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, kind, name).Object, r); err != nil {
			t.Fatal(err)
		}
		rules, role = r.Rules, r
	}
	applyRendered(t, ctx, c.Client, ns, objs, map[string]string{kind: name, bindingKind: name})
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(role), role); err != nil {
		t.Fatal(err)
	}
	u, err := c.AddUser(user)
	if err != nil {
		t.Fatal(err)
	}
	g := &grant{cluster: clusterName, admin: c.Client, role: role, user: user, full: perms(rules)}
	if kind == "Role" {
		g.ns = ns
	}
	return g, u
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
