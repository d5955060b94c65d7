// Package csicontroller_test runs csi-controller end to end against the harness management
// cluster and the simulated CDI/LINSTOR, KubeVirt, virt-api and hot-plug (with real loop-device
// disks): ownership refusals, quotas, access-mode conflicts, idempotency, restart safety and a
// least-privilege RBAC run of the real binary.
package csicontroller_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

var (
	env  *harness.Env
	sims *fixture.Sims
	// disksErr says why the simulated disks cannot run here (not root, no loop devices).
	disksErr error
)

// phaseDelay is every simulator step. Small, so the package stays well under its time budget,
// but not zero, so that waits really wait for events.
const phaseDelay = 50 * time.Millisecond

const mib = int64(1) << 20

// TestMain is harness.Main plus the simulators, which must stop (and release their loop
// devices) before the control planes go away.
func TestMain(m *testing.M) {
	var setup harness.Setup
	if disksErr = fixture.Supported(); disksErr == nil {
		setup = fixture.Setup(&sims, fixture.Options{PhaseDelay: phaseDelay}, "csicontroller-e2e-disks-")
	}
	os.Exit(harness.MainWith(m, &env, setup))
}

func kube() client.Client { return env.Management.Client }

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// callCtx bounds one CSI call, as the sidecars' --timeout does.
func callCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tenant is one tenant (namespace + cluster) with its own controller.
type tenant struct {
	t       testing.TB
	ns      string
	cluster string
	storage config.Storage
	ctrl    *fixture.Controller
}

func needSims(t testing.TB) {
	t.Helper()
	harness.Require(t, harness.NeedDisks, disksErr)
}

// newTenant creates the namespace (if missing) and starts a controller for (ns, cluster).
func newTenant(t testing.TB, ns, cluster string, storage config.Storage) *tenant {
	t.Helper()
	needSims(t)
	if err := fixture.CreateNamespace(testCtx(t), kube(), ns); err != nil {
		t.Fatal(err)
	}
	tn := &tenant{t: t, ns: ns, cluster: cluster, storage: storage}
	tn.start()
	t.Cleanup(func() { tn.stop() })
	return tn
}

func (tn *tenant) scope() infra.Scope { return infra.Scope{Namespace: tn.ns, ClusterName: tn.cluster} }

func (tn *tenant) start() {
	tn.t.Helper()
	c, err := fixture.StartController(env.Management.Config, tn.scope(), tn.storage, tn.t.TempDir())
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.ctrl = c
}

func (tn *tenant) stop() {
	if tn.ctrl != nil {
		if err := tn.ctrl.Stop(); err != nil {
			tn.t.Errorf("stopping controller: %v", err)
		}
		tn.ctrl = nil
	}
}

func (tn *tenant) cc() csi.ControllerClient { return tn.ctrl.Controller }

func (tn *tenant) vm(name string) {
	tn.t.Helper()
	if err := fixture.CreateRunningVM(testCtx(tn.t), kube(), tn.ns, tn.cluster, name, ""); err != nil {
		tn.t.Fatal(err)
	}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}
}

var rwo = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)

func createReq(name string, size int64, caps ...*csi.VolumeCapability) *csi.CreateVolumeRequest {
	if len(caps) == 0 {
		caps = []*csi.VolumeCapability{rwo}
	}
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: caps,
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}}
}

// create creates a volume and fails the test on error.
func (tn *tenant) create(name string, size int64, caps ...*csi.VolumeCapability) *csi.Volume {
	tn.t.Helper()
	rsp, err := tn.cc().CreateVolume(callCtx(tn.t), createReq(name, size, caps...))
	if err != nil {
		tn.t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return rsp.GetVolume()
}

// createRetryingAborted is create, retrying ABORTED (another call on the volume still runs).
func (tn *tenant) createRetryingAborted(name string, size int64) *csi.Volume {
	tn.t.Helper()
	var vol *csi.Volume
	eventually(tn.t, "CreateVolume "+name+" not aborted", func(ctx context.Context) (bool, error) {
		rsp, err := tn.cc().CreateVolume(ctx, createReq(name, size))
		if status.Code(err) == codes.Aborted {
			return false, nil
		}
		vol = rsp.GetVolume()
		return err == nil, err
	})
	return vol
}

func (tn *tenant) publish(volID, vm string, c *csi.VolumeCapability) (*csi.ControllerPublishVolumeResponse, error) {
	if c == nil {
		c = rwo
	}
	return tn.cc().ControllerPublishVolume(callCtx(tn.t), &csi.ControllerPublishVolumeRequest{
		VolumeId: volID, NodeId: vm, VolumeCapability: c})
}

func (tn *tenant) mustPublish(volID, vm string, c *csi.VolumeCapability) map[string]string {
	tn.t.Helper()
	rsp, err := tn.publish(volID, vm, c)
	if err != nil {
		tn.t.Fatalf("ControllerPublishVolume %s → %s: %v", volID, vm, err)
	}
	return rsp.GetPublishContext()
}

func (tn *tenant) unpublish(volID, vm string) error {
	_, err := tn.cc().ControllerUnpublishVolume(callCtx(tn.t), &csi.ControllerUnpublishVolumeRequest{VolumeId: volID, NodeId: vm})
	return err
}

func (tn *tenant) delete(volID string) error {
	_, err := tn.cc().DeleteVolume(callCtx(tn.t), &csi.DeleteVolumeRequest{VolumeId: volID})
	return err
}

// wantCode fails the test unless err has code and (if given) a message containing want.
func wantCode(t *testing.T, what string, err error, code codes.Code, want ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
	for _, w := range want {
		if !strings.Contains(status.Convert(err).Message(), w) {
			t.Fatalf("%s: message %q does not say %q", what, status.Convert(err).Message(), w)
		}
	}
}

func getVM(t *testing.T, ns, name string) *kubevirtv1.VirtualMachine {
	t.Helper()
	vm := &kubevirtv1.VirtualMachine{}
	if err := kube().Get(testCtx(t), client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

func getVMI(t *testing.T, ns, name string) *kubevirtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := kube().Get(testCtx(t), client.ObjectKey{Namespace: ns, Name: name}, vmi); err != nil {
		t.Fatal(err)
	}
	return vmi
}

func dataVolumes(t *testing.T, ns string) []cdiv1.DataVolume {
	t.Helper()
	var list cdiv1.DataVolumeList
	if err := kube().List(testCtx(t), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// eventually polls cond (API reads) until it holds; for checks of state the test itself
// cannot be notified about.
func eventually(t testing.TB, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(testCtx(t), 20*time.Millisecond, 30*time.Second, true, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
