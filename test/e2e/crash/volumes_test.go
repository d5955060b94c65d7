package crash

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
)

const (
	csiNS = "crash-csi"
	csiVM = "crash-csi-w1"
	mib   = int64(1) << 20
)

// csiWorld is the csi-controller's tenant: one running worker VM, and a healthy controller that
// prepares and cleans up each run (it is idle while a victim runs).
type csiWorld struct {
	t     *testing.T
	scope infra.Scope
	base  *fixture.Controller
}

// TestCSIControllerCrash kills csi-controller after each of its API writes (DataVolume create,
// virt-api addvolume/removevolume, claim and DataVolume patches, deletes) in every volume
// operation, and checks that the call retried against a fresh controller — as the CSI
// sidecars do — converges with no DataVolume, claim or hot-plugged volume left over.
func TestCSIControllerCrash(t *testing.T) {
	// The three components' scenarios share nothing but the simulator and run side by side.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := fixture.CreateNamespace(ctx, env.Management.Client, csiNS); err != nil {
		t.Fatal(err)
	}
	if err := fixture.CreateRunningVM(ctx, env.Management.Client, csiNS, cluster, csiVM, ""); err != nil {
		t.Fatal(err)
	}
	w := &csiWorld{t: t, scope: infra.Scope{Namespace: csiNS, ClusterName: cluster}}
	base, stopBase, err := w.start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stopBase()
	w.base = base

	t.Run("CreateVolume", func(t *testing.T) {
		crashAtEveryStep(t, "csi-controller", "CreateVolume", func(t *testing.T, n int) crashRun {
			name := fmt.Sprintf("crash-create-%d", n)
			id := controller.VolumeID(cluster, name)
			return w.run(func(ctx context.Context, cc csi.ControllerClient) error {
				_, err := cc.CreateVolume(ctx, createReq(name, 32*mib))
				return err
			}, []string{id}, nil, nil)
		})
	})
	t.Run("ControllerPublishVolume", func(t *testing.T) {
		crashAtEveryStep(t, "csi-controller", "ControllerPublishVolume", func(t *testing.T, n int) crashRun {
			id := w.mustCreate(t, fmt.Sprintf("crash-publish-%d", n))
			return w.run(func(ctx context.Context, cc csi.ControllerClient) error {
				_, err := cc.ControllerPublishVolume(ctx, publishReq(id))
				return err
			}, []string{id}, []string{id}, nil)
		})
	})
	t.Run("ControllerUnpublishVolume", func(t *testing.T) {
		crashAtEveryStep(t, "csi-controller", "ControllerUnpublishVolume", func(t *testing.T, n int) crashRun {
			id := w.mustCreate(t, fmt.Sprintf("crash-unpublish-%d", n))
			if _, err := w.base.Controller.ControllerPublishVolume(w.callCtx(t), publishReq(id)); err != nil {
				t.Fatal(err)
			}
			return w.run(func(ctx context.Context, cc csi.ControllerClient) error {
				_, err := cc.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: csiVM})
				return err
			}, []string{id}, nil, nil)
		})
	})
	t.Run("ControllerExpandVolume", func(t *testing.T) {
		crashAtEveryStep(t, "csi-controller", "ControllerExpandVolume", func(t *testing.T, n int) crashRun {
			id := w.mustCreate(t, fmt.Sprintf("crash-expand-%d", n))
			return w.run(func(ctx context.Context, cc csi.ControllerClient) error {
				rsp, err := cc.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
					CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
				if err == nil && rsp.GetCapacityBytes() < 64*mib {
					return fmt.Errorf("expanded to %d bytes, asked for %d", rsp.GetCapacityBytes(), 64*mib)
				}
				return err
			}, []string{id}, nil, func(ctx context.Context) []string { return w.checkSize(ctx, id, 64*mib) })
		})
	})
	t.Run("DeleteVolume", func(t *testing.T) {
		crashAtEveryStep(t, "csi-controller", "DeleteVolume", func(t *testing.T, n int) crashRun {
			id := w.mustCreate(t, fmt.Sprintf("crash-delete-%d", n))
			return w.run(func(ctx context.Context, cc csi.ControllerClient) error {
				_, err := cc.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
				return err
			}, nil, nil, nil)
		})
	})
}

func createReq(name string, size int64) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{blockRWO}}
}

var blockRWO = &csi.VolumeCapability{
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
}

func publishReq(id string) *csi.ControllerPublishVolumeRequest {
	return &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: csiVM, VolumeCapability: blockRWO}
}

// start runs a controller whose requests pass through sw (nil: unwatched), on a socket of its
// own, and returns it with its stop.
func (w *csiWorld) start(sw *Switch) (*fixture.Controller, func(), error) {
	cfg := env.Management.Config
	if sw != nil {
		cfg = sw.Config(cfg)
	}
	// Not t.TempDir: a unix socket path must stay short.
	dir, err := os.MkdirTemp("", "crash-csi-")
	if err != nil {
		return nil, nil, err
	}
	c, err := fixture.StartController(cfg, w.scope, fixture.Storage(), dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	return c, func() {
		if err := c.Stop(); err != nil {
			w.t.Logf("stopping controller: %v", err)
		}
		_ = os.RemoveAll(dir)
	}, nil
}

func (w *csiWorld) callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (w *csiWorld) mustCreate(t *testing.T, name string) string {
	t.Helper()
	rsp, err := w.base.Controller.CreateVolume(w.callCtx(t), createReq(name, 32*mib))
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return rsp.GetVolume().GetVolumeId()
}

// run is the crashRun of one CSI call: the victim makes it once; the recovery repeats it on a
// fresh controller until it succeeds, as the external-provisioner/attacher/resizer do. At the
// end exactly wantDVs exist (with their claims) and exactly wantPlugged are hot-plugged into
// the worker VM and its instance; extra checks more.
func (w *csiWorld) run(call func(context.Context, csi.ControllerClient) error, wantDVs, wantPlugged []string,
	extra func(context.Context) []string) crashRun {
	return crashRun{
		victim: func(ctx context.Context, sw *Switch) error {
			c, stop, err := w.start(sw)
			if err != nil {
				return err
			}
			defer stop()
			return untilKilled(ctx, sw, func(ctx context.Context) error { return call(ctx, c.Controller) })
		},
		recover: func(ctx context.Context, sw *Switch) error {
			c, stop, err := w.start(sw)
			if err != nil {
				return err
			}
			defer stop()
			return retry(ctx, func(ctx context.Context) error { return call(ctx, c.Controller) })
		},
		check: func(ctx context.Context) (missing, leaked []string) {
			missing, leaked = w.compare(ctx, wantDVs, wantPlugged)
			if extra != nil {
				missing = append(missing, extra(ctx)...)
			}
			return missing, leaked
		},
		cleanup: w.cleanup,
	}
}

// retry repeats call until it succeeds or ctx ends, as a CO retries a failed CSI call; each
// attempt gets a bounded deadline like the sidecars' --timeout.
func retry(ctx context.Context, call func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		attempt, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		last = call(attempt)
		return last == nil, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("still failing: %w", last)
	}
	return err
}

// csiState is what of the tenant's volumes the infra cluster holds.
type csiState struct {
	dvs     map[string]*cdiv1.DataVolume
	claims  map[string]bool
	vm, vmi []string // hot-plugged volume names in the VM template and the VMI spec
	status  map[string]kubevirtv1.VolumePhase
}

func (w *csiWorld) state(ctx context.Context) (*csiState, error) {
	c := env.Management.Client
	st := &csiState{dvs: map[string]*cdiv1.DataVolume{}, claims: map[string]bool{}, status: map[string]kubevirtv1.VolumePhase{}}
	var dvs cdiv1.DataVolumeList
	if err := c.List(ctx, &dvs, client.InNamespace(csiNS)); err != nil {
		return nil, err
	}
	for i := range dvs.Items {
		st.dvs[dvs.Items[i].Name] = &dvs.Items[i]
	}
	var claims corev1.PersistentVolumeClaimList
	if err := c.List(ctx, &claims, client.InNamespace(csiNS)); err != nil {
		return nil, err
	}
	for _, pvc := range claims.Items {
		st.claims[pvc.Name] = true
	}
	vm := &kubevirtv1.VirtualMachine{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: csiNS, Name: csiVM}, vm); err != nil {
		return nil, err
	}
	for _, v := range vm.Spec.Template.Spec.Volumes {
		if v.Name != "rootdisk" {
			st.vm = append(st.vm, v.Name)
		}
	}
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: csiNS, Name: csiVM}, vmi); err != nil {
		return nil, err
	}
	for _, v := range vmi.Spec.Volumes {
		if v.Name != "rootdisk" {
			st.vmi = append(st.vmi, v.Name)
		}
	}
	for _, vs := range vmi.Status.VolumeStatus {
		if vs.Name != "rootdisk" {
			st.status[vs.Name] = vs.Phase
		}
	}
	return st, nil
}

// compare lists what of wantDVs/wantPlugged is missing and what exists beyond them.
func (w *csiWorld) compare(ctx context.Context, wantDVs, wantPlugged []string) (missing, leaked []string) {
	st, err := w.state(ctx)
	if err != nil {
		return []string{"reading state: " + err.Error()}, nil
	}
	for _, id := range wantDVs {
		dv, ok := st.dvs[id]
		switch {
		case !ok:
			missing = append(missing, "DataVolume "+id)
		case dv.Status.Phase != cdiv1.Succeeded:
			missing = append(missing, fmt.Sprintf("DataVolume %s Succeeded (is %s)", id, dv.Status.Phase))
		case dv.DeletionTimestamp != nil:
			missing = append(missing, "DataVolume "+id+" (deleting)")
		}
		if !st.claims[id] {
			missing = append(missing, "claim "+id)
		}
	}
	for name := range st.dvs {
		if !slices.Contains(wantDVs, name) {
			leaked = append(leaked, "DataVolume "+name)
		}
	}
	for name := range st.claims {
		if !slices.Contains(wantDVs, name) {
			leaked = append(leaked, "claim "+name)
		}
	}
	for _, id := range wantPlugged {
		if n := count(st.vm, id); n != 1 {
			missing = append(missing, fmt.Sprintf("volume %s once in the VM (%d times)", id, n))
		}
		if n := count(st.vmi, id); n != 1 {
			missing = append(missing, fmt.Sprintf("volume %s once in the VMI (%d times)", id, n))
		}
		if st.status[id] != kubevirtv1.VolumeReady {
			missing = append(missing, fmt.Sprintf("volume %s Ready on the VMI (is %q)", id, st.status[id]))
		}
	}
	for _, where := range []struct {
		what  string
		names []string
	}{{"VM", st.vm}, {"VMI", st.vmi}} {
		for _, name := range where.names {
			if !slices.Contains(wantPlugged, name) {
				leaked = append(leaked, fmt.Sprintf("hot-plugged volume %s on the %s", name, where.what))
			}
		}
	}
	for name, phase := range st.status {
		if !slices.Contains(wantPlugged, name) {
			leaked = append(leaked, fmt.Sprintf("volume status %s (%s) on the VMI", name, phase))
		}
	}
	return missing, leaked
}

func count(names []string, name string) int {
	n := 0
	for _, x := range names {
		if x == name {
			n++
		}
	}
	return n
}

// checkSize checks that volume id was expanded to at least size: recorded on the DataVolume and
// granted on its claim.
func (w *csiWorld) checkSize(ctx context.Context, id string, size int64) []string {
	var missing []string
	dv := &cdiv1.DataVolume{}
	if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: csiNS, Name: id}, dv); err != nil {
		return []string{err.Error()}
	}
	if c, _ := strconv.ParseInt(dv.Annotations[controller.AnnCapacity], 10, 64); c < size {
		missing = append(missing, fmt.Sprintf("recorded capacity %d ≥ %d", c, size))
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := env.Management.Client.Get(ctx, client.ObjectKey{Namespace: csiNS, Name: id}, pvc); err != nil {
		return append(missing, err.Error())
	}
	if got := pvc.Status.Capacity[corev1.ResourceStorage]; got.Value() < size {
		missing = append(missing, fmt.Sprintf("claim capacity %s ≥ %d", got.String(), size))
	}
	return missing
}

// cleanup unpublishes and deletes every volume of the tenant with the healthy controller and
// waits until nothing is left.
func (w *csiWorld) cleanup(ctx context.Context) error {
	st, err := w.state(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for id := range st.dvs {
		if _, err := w.base.Controller.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: csiVM}); err != nil {
			errs = append(errs, fmt.Errorf("unpublishing %s: %w", id, err))
		}
		if _, err := w.base.Controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			errs = append(errs, fmt.Errorf("deleting %s: %w", id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return eventually(ctx, 20*time.Second, func(ctx context.Context) error {
		missing, leaked := w.compare(ctx, nil, nil)
		if len(missing)+len(leaked) > 0 {
			return fmt.Errorf("left after cleanup: %v %v", missing, leaked)
		}
		return nil
	})
}
