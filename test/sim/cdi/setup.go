package cdi

import (
	"context"
	"fmt"
	"time"

	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tenantcloud/tenantcloud/test/sim/disks"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

// Driver is the CSI driver (and StorageClass provisioner) the simulated LINSTOR answers to.
// Claims of classes with any other provisioner are left Pending, as on a cluster where that
// provisioner is not installed.
const Driver = "linstor.csi.linbit.com"

// Fault points. "datavolume/<Phase>" (e.g. "datavolume/ImportInProgress",
// "datavolume/Succeeded") is consulted before a DataVolume enters Phase: Stall holds it in
// the previous phase, FailNext makes the transfer pod fail (restartCount+1, Running=False,
// retried after PhaseDelay), SetLatency slows the step.
const (
	FaultDataVolumePrefix = "datavolume/"
	// FaultPVCBind is passed before a PV is provisioned and bound to a claim; a failure is
	// reported as a ProvisioningFailed event and retried.
	FaultPVCBind = "pvc/bind"
	// FaultPVCResize is passed before ControllerExpandVolume; a failure sets the claim's
	// ControllerResizeError condition and is retried.
	FaultPVCResize = "pvc/resize"
	// FaultSnapshotReady is passed before a VolumeSnapshot becomes readyToUse; a failure sets
	// status.error and is retried.
	FaultSnapshotReady = "snapshot/ready"
)

// FaultDataVolume is the fault point consulted before a DataVolume enters phase.
func FaultDataVolume(phase string) string { return FaultDataVolumePrefix + phase }

// Options configure the simulator.
type Options struct {
	// PhaseDelay is the time each DataVolume phase, each provisioning and each snapshot takes.
	// Zero makes them immediate.
	PhaseDelay time.Duration
	// Faults, if not nil, is consulted at the points named above.
	Faults *fault.Injector
	// ResizeDelay is the time ControllerExpandVolume (and, for Filesystem claims in use by a
	// scheduled pod, the node expansion) takes.
	ResizeDelay time.Duration
	// Disks, if not nil, holds the volumes' data (test/sim/disks): snapshots and clones copy
	// it, so a restored or cloned disk holds its source's bytes.
	Disks *disks.Manager
}

// sim is the state the simulator's controllers share.
type sim struct {
	client.Client
	live     client.Reader // uncached reads for conflict retries and existence checks
	events   events.EventRecorder
	opts     Options
	clock    *clock
	identity string // external-provisioner's csiProvisionerIdentity
}

// Setup registers the simulated CDI DataVolume controller, the LINSTOR CSI provisioner,
// resizer and snapshotter, and the parts of kube-controller-manager they rely on (PV binder,
// pvc-/pv-protection, volume-snapshot controller, and the garbage collection of a deleted
// DataVolume's claim) with mgr. It also creates (within ctx, before returning) the CSIDriver
// object LINSTOR's installation creates, which CDI checks to decide whether to use volume
// populators. The controllers run when mgr is started.
func Setup(ctx context.Context, mgr manager.Manager, opts Options) error {
	s := &sim{
		Client:   mgr.GetClient(),
		live:     mgr.GetAPIReader(),
		events:   mgr.GetEventRecorder("cdi-sim"),
		opts:     opts,
		clock:    newClock(),
		identity: fmt.Sprintf("%d-8081-%s", time.Now().UnixMilli(), Driver),
	}
	// Before any controller runs: CDI decides populator vs legacy flow on a DataVolume's
	// first reconcile by looking for this object. (Writes do not need the manager started.)
	if err := ensureCSIDriver(ctx, s.Client); err != nil {
		return err
	}
	for name, setup := range map[string]func(manager.Manager) error{
		"datavolume":     s.setupDataVolumes,
		"provisioner":    s.setupClaims,
		"pv":             s.setupVolumes,
		"volumesnapshot": s.setupSnapshots,
	} {
		if err := setup(mgr); err != nil {
			return fmt.Errorf("setting up the %s simulator: %w", name, err)
		}
	}
	return nil
}

// ensureCSIDriver creates the CSIDriver object of the simulated LINSTOR if missing.
func ensureCSIDriver(ctx context.Context, c client.Client) error {
	attach, podInfo := true, true
	d := &storagev1.CSIDriver{
		ObjectMeta: metav1.ObjectMeta{Name: Driver},
		Spec: storagev1.CSIDriverSpec{
			AttachRequired:       &attach,
			PodInfoOnMount:       &podInfo,
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent},
		},
	}
	if err := c.Create(ctx, d); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating CSIDriver %s: %w", Driver, err)
	}
	return nil
}
