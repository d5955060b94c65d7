package deploy_test

import (
	"slices"
	"testing"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// TestChartsLegacyDriver renders both charts with legacyDriver enabled (docs/migration.md)
// and has the apiservers accept every object; the second set of processes serves
// csi.kubevirt.io on sockets of its own and the native ones are unchanged.
func TestChartsLegacyDriver(t *testing.T) {
	ctx := testCtx(t)
	const mgmtNS, tenantNS = "deploy-legacy", "legacy-system"
	mgmt := render(t, "tenantcloud", mgmtNS, append(slices.Clone(mgmtSets), "csiController.legacyDriver.enabled=true")...)
	createNamespace(t, ctx, env.Management.Client, mgmtNS)
	dryRunAll(t, ctx, env.Management.Client, mgmtNS, mgmt)
	tenant := render(t, "tenantcloud-tenant", tenantNS, append(slices.Clone(tenantSets), "csiNode.legacyDriver.enabled=true")...)
	createNamespace(t, ctx, env.Tenant.Client, tenantNS)
	dryRunAll(t, ctx, env.Tenant.Client, tenantNS, tenant)

	ctrl := release + "-csi-controller"
	node := release + "-csi-node"
	for _, c := range []struct {
		kind, name, container string
		want                  string
	}{
		{"Deployment", ctrl, "csi-controller", "--endpoint=unix:///csi/csi.sock"},
		{"Deployment", ctrl, "csi-controller", "--legacy-endpoint=unix:///csi/legacy.sock"},
		{"Deployment", ctrl, "csi-attacher", "--csi-address=/csi/csi.sock"},
		{"Deployment", ctrl, "csi-attacher-legacy", "--csi-address=/csi/legacy.sock"},
		{"Deployment", ctrl, "csi-provisioner-legacy", "--csi-address=/csi/legacy.sock"},
		{"Deployment", ctrl, "csi-resizer-legacy", "--csi-address=/csi/legacy.sock"},
		{"Deployment", ctrl, "csi-snapshotter-legacy", "--csi-address=/csi/legacy.sock"},
		{"DaemonSet", node, "csi-node", "--endpoint=unix:///csi/csi.sock"},
		{"DaemonSet", node, "csi-node-legacy", "--driver-name=" + tccsi.LegacyDriverName},
		{"DaemonSet", node, "csi-node-legacy", "--endpoint=unix:///csi-legacy/csi.sock"},
		{"DaemonSet", node, "node-driver-registrar-legacy", "--kubelet-registration-path=/var/lib/kubelet/plugins/" + tccsi.LegacyDriverName + "/csi.sock"},
	} {
		objs := mgmt
		if c.kind == "DaemonSet" {
			objs = tenant
		}
		if args := containerArgs(t, objs, c.kind, c.name, c.container); !slices.Contains(args, c.want) {
			t.Errorf("%s %s container %s: args %v lack %s", c.kind, c.name, c.container, args, c.want)
		}
	}
	if args := containerArgs(t, tenant, "DaemonSet", node, "csi-node"); slices.ContainsFunc(args, func(a string) bool { return a == "--driver-name="+tccsi.LegacyDriverName }) {
		t.Errorf("the native csi-node serves the legacy name: %v", args)
	}
}
