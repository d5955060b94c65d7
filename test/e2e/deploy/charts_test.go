package deploy_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
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

// TestCSIControllerRoleMatchesCode: the chart's csi-controller Role grants exactly
// controller.InfraRBACRules (the rules its least-privilege e2e runs the binary with).
func TestCSIControllerRoleMatchesCode(t *testing.T) {
	objs := render(t, "tenantcloud", "deploy-mgmt", mgmtSets...)
	role := roleOf(t, objs, release+"-csi-controller")
	if got, want := normalize(role.Rules), normalize(controller.InfraRBACRules()); !reflect.DeepEqual(got, want) {
		t.Errorf("chart Role %s rules\n%v\nwant (controller.InfraRBACRules)\n%v", role.Name, got, want)
	}
}

// roleOf converts the rendered Role name.
func roleOf(t *testing.T, objs []*unstructured.Unstructured, name string) *rbacv1.Role {
	t.Helper()
	role := &rbacv1.Role{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, "Role", name).Object, role); err != nil {
		t.Fatal(err)
	}
	return role
}

// normalize flattens rules to sorted "group/resource:verb" strings.
func normalize(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, p := range perms(rules) {
		out = append(out, p.group+"/"+p.resource+":"+p.verb)
	}
	slices.Sort(out)
	return out
}

func unstructuredString(obj map[string]any, fields ...string) (string, bool, error) {
	v, ok, err := unstructured.NestedString(obj, fields...)
	return strings.TrimSpace(v), ok, err
}
