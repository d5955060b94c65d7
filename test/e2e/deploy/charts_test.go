package deploy_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
)

// TestLint runs helm lint --strict on both charts with the values the tests use.
func TestLint(t *testing.T) {
	for chart, sets := range map[string][]string{"tenantcloud": mgmtSets, "tenantcloud-tenant": tenantSets} {
		args := []string{"lint", "--strict", chartDir(chart)}
		for _, s := range sets {
			args = append(args, "--set", s)
		}
		out := helm(t, args...)
		t.Logf("%s", out)
	}
}

// TestManagementChartDryRun renders the management chart for a tenant namespace and has the
// management apiserver accept every object (server-side dry-run), then checks the rendered
// config against pkg/config for each component that reads it.
func TestManagementChartDryRun(t *testing.T) {
	ctx := testCtx(t)
	const ns = "deploy-mgmt"
	objs := render(t, "tenantcloud", ns, mgmtSets...)
	t.Logf("management chart: %d objects %v", len(objs), countKinds(objs))
	createNamespace(t, ctx, env.Management.Client, ns)
	dryRunAll(t, ctx, env.Management.Client, ns, objs)

	raw, ok, err := unstructuredString(find(t, objs, "Secret", release+"-config").Object, "stringData", "config.yaml")
	if err != nil || !ok {
		t.Fatalf("config Secret has no stringData config.yaml: %v", err)
	}
	cfg, err := config.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("rendered config does not parse: %v\n%s", err, raw)
	}
	if cfg.InfraNamespace != ns || cfg.ClusterName != cluster {
		t.Errorf("config is for %s/%s, want %s/%s", cfg.InfraNamespace, cfg.ClusterName, ns, cluster)
	}
	for _, comp := range []config.Component{config.CCM, config.CSIController, config.Autoscaler} {
		if err := cfg.ValidateFor(comp); err != nil {
			t.Errorf("rendered config is invalid for %s: %v\n%s", comp, err, raw)
		}
	}
}

// TestManagementChartCertManager renders the cert-manager variant (not applied: the harness
// has no cert-manager) and checks the Certificates produce the Secrets the pods mount.
func TestManagementChartCertManager(t *testing.T) {
	objs := render(t, "tenantcloud", "deploy-mgmt", append(slices.Clone(mgmtSets), "autoscaler.tls.certManager.enabled=true")...)
	secrets := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() == "Certificate" {
			name, _, _ := unstructuredString(o.Object, "spec", "secretName")
			secrets[name] = true
		}
	}
	for _, want := range []string{release + "-autoscaler-provider-tls", release + "-cluster-autoscaler-tls"} {
		if !secrets[want] {
			t.Errorf("no cert-manager Certificate writes Secret %s (have %v)", want, secrets)
		}
	}
}

// TestTenantChartDryRun renders the tenant chart and has the tenant apiserver accept every
// object, including the CRD-backed VolumeSnapshotClass.
func TestTenantChartDryRun(t *testing.T) {
	ctx := testCtx(t)
	const ns = "tenantcloud-system"
	objs := render(t, "tenantcloud-tenant", ns, tenantSets...)
	t.Logf("tenant chart: %d objects %v", len(objs), countKinds(objs))
	createNamespace(t, ctx, env.Tenant.Client, ns)
	dryRunAll(t, ctx, env.Tenant.Client, ns, objs)

	raw, ok, err := unstructuredString(find(t, objs, "ConfigMap", release+"-csi-node").Object, "data", "config.yaml")
	if err != nil || !ok {
		t.Fatalf("csi-node ConfigMap has no config.yaml: %v", err)
	}
	cfg, err := config.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("csi-node config does not parse: %v\n%s", err, raw)
	}
	if err := cfg.ValidateFor(config.CSINode); err != nil {
		t.Errorf("csi-node config is invalid: %v", err)
	}
}

func unstructuredString(obj map[string]any, fields ...string) (string, bool, error) {
	v, ok, err := unstructured.NestedString(obj, fields...)
	return strings.TrimSpace(v), ok, err
}

// TestCSIControllerTopology: with config.storage.topology the chart turns on csi-provisioner's
// Topology feature gate and grants csi-controller exactly get on Nodes as a ClusterRole;
// without it, neither. The rendered config carries the topology to the program,
// and topology without the ccm's node zones is refused at render time.
func TestCSIControllerTopology(t *testing.T) {
	const ns = "deploy-topo"
	name := release + "-csi-controller"
	cr := "tenantcloud-" + ns + "-" + name
	topo := append(slices.Clone(mgmtSets), "config.storage.topology.replicated.zones={zone-a,zone-b}")
	objs := render(t, "tenantcloud", ns, topo...)
	role := &rbacv1.ClusterRole{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, "ClusterRole", cr).Object, role); err != nil {
		t.Fatal(err)
	}
	if want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}}}; !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("ClusterRole %s rules %v, want exactly get nodes", cr, role.Rules)
	}
	find(t, objs, "ClusterRoleBinding", cr)
	args, err := chartrender.ContainerArgs(objs, "Deployment", name, "csi-provisioner")
	if err != nil || !slices.Contains(args, "--feature-gates=Topology=true") {
		t.Errorf("csi-provisioner args %v (%v): want --feature-gates=Topology=true", args, err)
	}
	raw, _, _ := unstructuredString(find(t, objs, "Secret", release+"-config").Object, "stringData", "config.yaml")
	cfg, err := config.Parse([]byte(raw))
	if err != nil || !reflect.DeepEqual(cfg.Storage.ClassZones("replicated"), []string{"zone-a", "zone-b"}) {
		t.Errorf("rendered config: %v, topology %+v", err, cfg)
	}

	off := render(t, "tenantcloud", ns, mgmtSets...)
	if chartrender.Find(off, "ClusterRole", cr) != nil {
		t.Errorf("ClusterRole %s rendered without topology", cr)
	}
	if args, _ := chartrender.ContainerArgs(off, "Deployment", name, "csi-provisioner"); slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "Topology") }) {
		t.Errorf("csi-provisioner args %v mention Topology without topology configured", args)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	noZones := append(slices.Clone(topo), "ccm.nodeZones=false")
	if _, err := chartrender.Template(ctx, helmBin(t), "tenantcloud", release, ns, noZones...); err == nil || !strings.Contains(err.Error(), "needs ccm.nodeZones=true") {
		t.Errorf("topology without ccm.nodeZones rendered: %v", err)
	}
}

// TestEveryContainerHasAMemoryLimit: every container both charts render (legacy driver on, so
// every sidecar is there) has a memory limit, so a leak is contained and Go's soft limit has a
// target. Our programs set GOMEMLIMIT themselves from the limit (pkg/cli); the upstream ones,
// which do not, get it from the chart at 80 % of the limit.
func TestEveryContainerHasAMemoryLimit(t *testing.T) {
	ours := map[string]bool{"ccm": true, "csi-controller": true, "autoscaler-provider": true, "csi-node": true, "csi-node-legacy": true}
	for chart, sets := range map[string][]string{
		"tenantcloud":        append(slices.Clone(mgmtSets), "csiController.legacyDriver.enabled=true"),
		"tenantcloud-tenant": append(slices.Clone(tenantSets), "csiNode.legacyDriver.enabled=true"),
	} {
		checked := 0
		for _, o := range render(t, chart, "deploy-memory", sets...) {
			containers, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			if err != nil {
				t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
			}
			for _, c := range containers {
				c, _ := c.(map[string]any)
				name, _, _ := unstructured.NestedString(c, "name")
				where := fmt.Sprintf("%s: %s %s container %s", chart, o.GetKind(), o.GetName(), name)
				raw, _, _ := unstructured.NestedString(c, "resources", "limits", "memory")
				limit, err := resource.ParseQuantity(raw)
				if err != nil || limit.Value() <= 0 {
					t.Errorf("%s: memory limit %q", where, raw)
					continue
				}
				checked++
				goMemLimit := ""
				env, _, _ := unstructured.NestedSlice(c, "env")
				for _, e := range env {
					if e, _ := e.(map[string]any); e["name"] == "GOMEMLIMIT" {
						goMemLimit, _ = e["value"].(string)
					}
				}
				switch want := fmt.Sprintf("%dMiB", limit.Value()*8/10>>20); {
				case ours[name] && goMemLimit != "":
					t.Errorf("%s: GOMEMLIMIT=%s overrides the program's own 80 %% of its limit", where, goMemLimit)
				case !ours[name] && goMemLimit != want:
					t.Errorf("%s: GOMEMLIMIT=%q with a %s limit, want %q", where, goMemLimit, raw, want)
				}
			}
		}
		if checked == 0 {
			t.Errorf("%s: no container rendered", chart)
		}
	}
}

// TestCSIControllerHotplugModes: config.storage.hotplug=declarative swaps exactly the hot-plug
// rights of the csi-controller Role — patch on VMs instead of update on the four virt-api
// subresources — leaves every other rule as the default renders it, and reaches the program
// through the rendered config.
func TestCSIControllerHotplugModes(t *testing.T) {
	const ns = "deploy-hotplug"
	name := release + "-csi-controller"
	subresources := []perm{
		{"subresources.kubevirt.io", "virtualmachines/addvolume", "update"},
		{"subresources.kubevirt.io", "virtualmachines/removevolume", "update"},
		{"subresources.kubevirt.io", "virtualmachineinstances/addvolume", "update"},
		{"subresources.kubevirt.io", "virtualmachineinstances/removevolume", "update"},
	}
	patchVMs := perm{"kubevirt.io", "virtualmachines", "patch"}
	rolePerms := func(sets ...string) ([]perm, *config.Config) {
		objs := render(t, "tenantcloud", ns, append(slices.Clone(mgmtSets), sets...)...)
		role, err := chartrender.Role(objs, name)
		if err != nil {
			t.Fatal(err)
		}
		raw, _, _ := unstructuredString(find(t, objs, "Secret", release+"-config").Object, "stringData", "config.yaml")
		cfg, err := config.Parse([]byte(raw))
		if err != nil {
			t.Fatalf("rendered config: %v", err)
		}
		return perms(role.Rules), cfg
	}
	def, defCfg := rolePerms()
	sub, _ := rolePerms("config.storage.hotplug=subresource")
	decl, declCfg := rolePerms("config.storage.hotplug=declarative")
	if !reflect.DeepEqual(def, sub) {
		t.Errorf("default and hotplug=subresource render different Roles:\n%v\n%v", def, sub)
	}
	for _, p := range subresources {
		if !slices.Contains(def, p) || slices.Contains(decl, p) {
			t.Errorf("%v: in the default Role %v, in the declarative one %v; want only the default", p, slices.Contains(def, p), slices.Contains(decl, p))
		}
	}
	if slices.Contains(def, patchVMs) || !slices.Contains(decl, patchVMs) {
		t.Errorf("%v: in the default Role %v, in the declarative one %v; want only the declarative", patchVMs, slices.Contains(def, patchVMs), slices.Contains(decl, patchVMs))
	}
	rest := func(ps []perm) []perm {
		return slices.DeleteFunc(slices.Clone(ps), func(p perm) bool { return p == patchVMs || slices.Contains(subresources, p) })
	}
	if !reflect.DeepEqual(rest(def), rest(decl)) {
		t.Errorf("the modes differ beyond the hot-plug rights:\n%v\n%v", rest(def), rest(decl))
	}
	if defCfg.Storage.Hotplug != config.HotplugSubresource || declCfg.Storage.Hotplug != config.HotplugDeclarative {
		t.Errorf("rendered configs say hotplug %q and %q", defCfg.Storage.Hotplug, declCfg.Storage.Hotplug)
	}
}
