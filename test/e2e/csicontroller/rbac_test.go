package csicontroller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	authorizationv1 "k8s.io/api/authorization/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/scrape"
)

// chartRules are the rules of the csi-controller Role the management chart renders: the Role
// the binary runs with in a real installation, so this suite runs it with nothing more.
func chartRules(tb testing.TB) []rbacv1.PolicyRule {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const release = "tc"
	objs, err := chartrender.Template(ctx, harness.Bin(tb, "helm", "hack/bin-helm.sh"), "tenantcloud", release, "csi-rbac",
		"clusterName=rbac", "config.storage.defaultStorageClass=fast")
	if err != nil {
		tb.Fatal(err)
	}
	role, err := chartrender.Role(objs, release+"-csi-controller")
	if err != nil {
		tb.Fatal(err)
	}
	if len(role.Rules) == 0 {
		tb.Fatalf("the chart's Role %s grants nothing", role.Name)
	}
	return role.Rules
}

// TestRBACLeastPrivilege builds and runs the real csi-controller binary with credentials of a
// user bound only to the chart's csi-controller Role in one namespace, and drives a whole volume lifecycle through
// its socket. Then it takes the hot-plug right away and checks publishing fails with
// PERMISSION_DENIED (so the Role is what is actually used).
func TestRBACLeastPrivilege(t *testing.T) {
	needSims(t)
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	const ns, cluster, user = "csi-rbac", "rbac", "tenantcloud:csi-controller:rbac"
	ctx := testCtx(t)
	tn := &tenant{t: t, ns: ns, cluster: cluster}
	if err := createNamespaceAndVM(ctx, ns, cluster, "rbac-w1"); err != nil {
		t.Fatal(err)
	}
	role, kubeconfig := grantInfraRole(t, ns, user)
	granted := role.Rules
	bc := runController(t, ns, cluster, kubeconfig)
	out, cc := bc.out, bc.cc
	tn.ctrl = nil

	vol, err := cc.CreateVolume(callCtx(t), createReq("pvc-rbac", 16*mib))
	if err != nil {
		t.Fatalf("CreateVolume: %v\n%s", err, out)
	}
	id := vol.GetVolume().GetVolumeId()
	if _, err := cc.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: "rbac-w1", VolumeCapability: rwo}); err != nil {
		t.Fatalf("ControllerPublishVolume: %v\n%s", err, out)
	}
	if _, err := cc.ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 32 * mib}}); err != nil {
		t.Fatalf("ControllerExpandVolume: %v\n%s", err, out)
	}
	snap, err := cc.CreateSnapshot(callCtx(t), &csi.CreateSnapshotRequest{Name: "snap-rbac", SourceVolumeId: id})
	if err != nil || !snap.GetSnapshot().GetReadyToUse() {
		t.Fatalf("CreateSnapshot = %v, %v\n%s", snap, err, out)
	}
	restoreReq := createReq("pvc-rbac-restored", 32*mib)
	restoreReq.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshot().GetSnapshotId()}}}
	restored, err := cc.CreateVolume(callCtx(t), restoreReq)
	if err != nil {
		t.Fatalf("CreateVolume from snapshot: %v\n%s", err, out)
	}
	if _, err := cc.ListVolumes(callCtx(t), &csi.ListVolumesRequest{}); err != nil {
		t.Fatalf("ListVolumes: %v", err)
	}

	// Without the hot-plug right, publishing is PERMISSION_DENIED (kube-apiserver refuses to
	// proxy the subresource call) and names the reason.
	role.Rules = []rbacv1.PolicyRule{}
	for _, r := range granted {
		if r.APIGroups[0] != "subresources.kubevirt.io" {
			role.Rules = append(role.Rules, r)
		}
	}
	if err := kube().Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	waitAllowed(t, ns, user, false)
	_, err = cc.ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{
		VolumeId: restored.GetVolume().GetVolumeId(), NodeId: "rbac-w1", VolumeCapability: rwo})
	wantCode(t, "publish without the addvolume right", err, codes.PermissionDenied, "addvolume", "forbidden", "infra RBAC")
	role.Rules = granted
	if err := kube().Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	waitAllowed(t, ns, user, true)

	if _, err := cc.ControllerUnpublishVolume(callCtx(t), &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: "rbac-w1"}); err != nil {
		t.Fatalf("ControllerUnpublishVolume: %v\n%s", err, out)
	}
	if _, err := cc.DeleteSnapshot(callCtx(t), &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()}); err != nil {
		t.Fatalf("DeleteSnapshot: %v", err)
	}
	for _, v := range []string{id, restored.GetVolume().GetVolumeId()} {
		if _, err := cc.DeleteVolume(callCtx(t), &csi.DeleteVolumeRequest{VolumeId: v}); err != nil {
			t.Fatalf("DeleteVolume %s: %v", v, err)
		}
	}
	// The Events the controller emitted made it (events.k8s.io create is in the Role).
	eventually(t, "Published event recorded", func(ctx context.Context) (bool, error) {
		var evs eventsv1.EventList
		if err := kube().List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "Published" && e.Regarding.Name == id {
				return true, nil
			}
		}
		return false, nil
	})
	checkMetrics(t, out.String())
	if s := out.String(); strings.Contains(s, "is forbidden") && !strings.Contains(s, "addvolume") {
		t.Errorf("the binary hit RBAC refusals beyond the intended one:\n%s", s)
	}
}

// checkMetrics scrapes the binary's metrics endpoint after the lifecycle above: the calls by
// outcome, nothing left in flight, and the infra refusal of the hot-plug counted as an infra
// API error.
func checkMetrics(t *testing.T, log string) {
	t.Helper()
	url, err := scrape.MetricsURL(log)
	if err != nil {
		t.Fatalf("%v:\n%s", err, log)
	}
	series := scrape.Get(t, url)
	const c = `component="csi-controller"`
	for want, n := range map[string]float64{
		`tenantcloud_operations_total{` + c + `,operation="CreateVolume",outcome="OK"}`:                          2,
		`tenantcloud_operations_total{` + c + `,operation="ControllerPublishVolume",outcome="OK"}`:               1,
		`tenantcloud_operations_total{` + c + `,operation="ControllerPublishVolume",outcome="PermissionDenied"}`: 1,
		`tenantcloud_operation_duration_seconds_count{` + c + `,operation="DeleteVolume",outcome="OK"}`:          2,
		`tenantcloud_operations_in_flight{` + c + `,operation="CreateVolume"}`:                                   0,
	} {
		if got, ok := series[want]; !ok || got != n {
			t.Errorf("%s = %v (present %v), want %v", want, got, ok, n)
		}
	}
	if got := series.Sum("tenantcloud_infra_api_errors_total", c, `code="403"`, `resource="virtualmachines/addvolume"`); got < 1 {
		t.Errorf("the refused hot-plug is not counted as an infra API error (%v)", got)
	}
	if got := series.Sum("tenantcloud_infra_api_requests_total", c, `method="POST"`, `resource="datavolumes"`, `code="201"`); got < 2 {
		t.Errorf("infra DataVolume creations counted %v, want ≥ 2", got)
	}
}

// grantInfraRole binds a new user to the chart's csi-controller rules in ns and returns the Role and the user's
// kubeconfig.
func grantInfraRole(tb testing.TB, ns, user string) (*rbacv1.Role, string) {
	tb.Helper()
	ctx := testCtx(tb)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "csi-controller"}, Rules: chartRules(tb)}
	if err := kube().Create(ctx, role); err != nil {
		tb.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "csi-controller"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	}
	if err := kube().Create(ctx, binding); err != nil {
		tb.Fatal(err)
	}
	u, err := env.Management.AddUser(user)
	if err != nil {
		tb.Fatal(err)
	}
	return role, u.Kubeconfig
}

// binaryController is the real csi-controller binary serving one tenant.
type binaryController struct {
	out  *scrape.Output
	cmd  *exec.Cmd
	conn *grpc.ClientConn
	cc   csi.ControllerClient
}

// runController builds and starts cmd/csi-controller for (ns, cluster) with the infra
// kubeconfig, its metrics endpoint on a free port, and returns once it answers Probe as ready.
// It is stopped (SIGTERM, exit 0 checked) when the test ends.
func runController(tb testing.TB, ns, cluster, kubeconfig string) *binaryController {
	tb.Helper()
	dir := tb.TempDir()
	bin := buildController(tb, dir)
	cfg := config.Config{ClusterName: cluster, InfraNamespace: ns, InfraKubeconfig: kubeconfig, Storage: fixtureStorage()}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
	endpoint := "unix://" + filepath.Join(dir, "csi.sock")
	bc := &binaryController{}
	bc.out, bc.cmd = runBinary(tb, bin, "--config", cfgPath, "--endpoint", endpoint, "--metrics-bind-address", "127.0.0.1:0", "-v", "2")
	if bc.conn, err = grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = bc.conn.Close() })
	bc.cc = csi.NewControllerClient(bc.conn)
	ids := csi.NewIdentityClient(bc.conn)
	ctx := testCtx(tb)
	info, err := ids.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	if err != nil || info.GetName() != tccsi.DriverName {
		tb.Fatalf("GetPluginInfo = %v, %v\n%s", info, err, bc.out)
	}
	probe, err := ids.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		tb.Fatalf("Probe = %v, %v\n%s", probe, err, bc.out)
	}
	return bc
}

// waitAllowed waits until RBAC lets user update virtualmachines/addvolume in ns (or not): role
// changes reach the apiserver's authorizer through its informers, a moment later.
func waitAllowed(t *testing.T, ns, user string, want bool) {
	t.Helper()
	eventually(t, fmt.Sprintf("addvolume allowed=%v for %s", want, user), func(ctx context.Context) (bool, error) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update",
				Group: "subresources.kubevirt.io", Resource: "virtualmachines", Subresource: "addvolume", Name: "rbac-w1"},
		}}
		if err := kube().Create(ctx, sar); err != nil {
			return false, err
		}
		return sar.Status.Allowed == want, nil
	})
}

func createNamespaceAndVM(ctx context.Context, ns, cluster, vm string) error {
	if err := createNamespace(ctx, ns); err != nil {
		return err
	}
	return createRunningVM(ctx, ns, cluster, vm)
}

// buildController builds cmd/csi-controller into dir.
func buildController(t testing.TB, dir string) string {
	t.Helper()
	if err := harness.BuildPrograms(context.Background(), dir, nil, "csi-controller"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "csi-controller")
}

// runBinary starts bin and stops it with SIGTERM at the end of the test, checking it exits 0.
func runBinary(t testing.TB, bin string, args ...string) (*scrape.Output, *exec.Cmd) {
	t.Helper()
	out := &scrape.Output{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(30 * time.Second)
		defer timer.Stop()
		select {
		case err := <-exited:
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) || err != nil {
				t.Errorf("csi-controller exited with %v after SIGTERM; output:\n%s", err, out)
			}
		case <-timer.C:
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("csi-controller did not exit within 30s of SIGTERM; output:\n%s", out)
		}
		if t.Failed() {
			fmt.Fprintf(os.Stderr, "csi-controller output:\n%s\n", out)
		}
	})
	return out, cmd
}
