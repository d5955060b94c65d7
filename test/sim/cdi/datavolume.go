package cdi

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

// CDI annotations the simulator reads or writes (values from CDI's controller/common).
const (
	annUsePopulator     = "cdi.kubevirt.io/storage.usePopulator"
	annCloneType        = "cdi.kubevirt.io/cloneType"
	annCloneRequest     = "k8s.io/CloneRequest"
	annImmediateBinding = "cdi.kubevirt.io/storage.bind.immediate.requested"
	annSelectedNode     = "volume.kubernetes.io/selected-node"
	annPodRestarts      = "cdi.kubevirt.io/storage.pod.restarts"
	annContentType      = "cdi.kubevirt.io/storage.contentType"
	annPreallocation    = "cdi.kubevirt.io/storage.preallocation.requested"
	annCreatedForDV     = "cdi.kubevirt.io/createdForDataVolume"
	annImportSource     = "cdi.kubevirt.io/storage.import.source"
)

func (s *sim) setupDataVolumes(mgr manager.Manager) error {
	return builder.ControllerManagedBy(mgr).Named("sim-cdi-datavolume").
		For(&cdiv1.DataVolume{}).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(s.dataVolumesForClaim)).
		Watches(&storagev1.StorageClass{}, handler.EnqueueRequestsFromMapFunc(s.unfinishedDataVolumes)).
		Watches(newSnapshot(), handler.EnqueueRequestsFromMapFunc(s.dataVolumesForSnapshot)).
		Complete(reconcile.Func(s.reconcileDataVolume))
}

// reconcileDataVolume plays CDI's DataVolume controllers (import, PVC clone, snapshot clone)
// and their populators.
func (s *sim) reconcileDataVolume(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := klog.FromContext(ctx).WithValues("datavolume", req.NamespacedName)
	ctx = klog.NewContext(ctx, log)
	dv := &cdiv1.DataVolume{}
	if err := s.Get(ctx, req.NamespacedName, dv); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, s.collectOrphanClaim(ctx, req.NamespacedName, "")
		}
		return reconcile.Result{}, fmt.Errorf("getting DataVolume %s: %w", req, err)
	}
	if dv.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	pvc, err := s.claim(ctx, req.NamespacedName)
	if err != nil {
		return reconcile.Result{}, err
	}
	if pvc != nil && !metav1.IsControlledBy(pvc, dv) {
		return reconcile.Result{}, s.foreignClaim(ctx, dv, pvc)
	}
	if pvc != nil && pvc.DeletionTimestamp != nil {
		// CDI's validatePVC: wait for the old claim to go, then create a new one.
		s.events.Eventf(dv, nil, corev1.EventTypeWarning, "ErrResourceMarkedForDeletion", "Sync",
			"Resource %q marked for deletion", pvc.Name)
		return reconcile.Result{}, nil
	}
	op := operationOf(dv)
	if op == opUnsupported {
		// Upload, DataSource references and external populators are not simulated; say so
		// rather than leave the DataVolume silently untouched.
		return reconcile.Result{}, s.setStatus(ctx, dv, nil, dv.Status.Phase, notRunning, reasonNotSimulated,
			"the CDI simulator supports blank/import, pvc and snapshot sources only")
	}
	if pvc == nil {
		return s.createClaim(ctx, dv, op)
	}
	return s.advance(ctx, dv, pvc, op)
}

// advance moves a DataVolume whose claim exists one step along its plan, after PhaseDelay.
func (s *sim) advance(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, op operation) (reconcile.Result, error) {
	populator := pvc.Annotations[annUsePopulator] == "true"
	plan := steps(op, populator, cloneStrategy(pvc.Annotations[annCloneType]))
	next, ok := nextStep(plan, dv.Status.Phase)
	if !ok {
		// Succeeded: keep the conditions in line with the claim (e.g. after a resize).
		return reconcile.Result{}, s.setStatus(ctx, dv, pvc, dv.Status.Phase, completed(op), "", "")
	}
	bound := pvc.Status.Phase == corev1.ClaimBound
	sc, err := s.class(ctx, pvc.Spec.StorageClassName)
	if err != nil {
		return reconcile.Result{}, err
	}
	waiting := waitsForFirstConsumer(sc, pvc, dv)
	switch {
	case !populator && next == cdiv1.PVCBound && !bound:
		phase := cdiv1.Pending
		if waiting {
			phase = cdiv1.WaitForFirstConsumer
		}
		return reconcile.Result{}, s.setStatus(ctx, dv, pvc, phase, notRunning, "", "")
	case populator && waiting && next == plan[0]:
		return reconcile.Result{}, s.setStatus(ctx, dv, pvc, cdiv1.PendingPopulation, notRunning, "", "")
	}
	if ready, err := s.sourceReady(ctx, dv, op, next); err != nil || !ready {
		return reconcile.Result{RequeueAfter: s.retryDelay()}, err
	}
	if next != cdiv1.PVCBound { // reflecting the bind is immediate; real work takes time
		if res, wait := s.wait(dv.UID, string(next), s.opts.PhaseDelay); wait {
			return res, nil
		}
	}
	point := FaultDataVolume(string(next))
	if res, held := s.stalled(point); held {
		return res, nil
	}
	if err := s.opts.Faults.Check(ctx, point); err != nil {
		var injected *fault.Error
		if !errors.As(err, &injected) {
			return reconcile.Result{}, err
		}
		s.clock.restart(dv.UID, string(next))
		return reconcile.Result{RequeueAfter: s.retryDelay()}, s.transferFailed(ctx, dv, pvc, op, injected)
	}
	if next == cdiv1.Succeeded && populator && !bound {
		if sc == nil { // the class went away mid-population; CDI would wait for it too
			return reconcile.Result{RequeueAfter: s.retryDelay()}, nil
		}
		// The populator's last act: the volume it filled is bound to the target claim.
		// provision leaves pvc holding the bound claim as written.
		if res, err := s.provision(ctx, pvc, sc); err != nil || !res.IsZero() {
			return res, err
		}
	}
	if next == cdiv1.Succeeded {
		if err := s.copyData(ctx, dv, op); err != nil {
			return reconcile.Result{}, err
		}
	}
	s.clock.done(dv.UID, string(next))
	log := klog.FromContext(ctx)
	log.V(2).Info("DataVolume phase", "from", dv.Status.Phase, "to", next)
	run := notRunning
	switch {
	case next == cdiv1.Succeeded:
		run = completed(op)
	case isInProgress(next):
		run = podRunning
	}
	return reconcile.Result{}, s.setStatus(ctx, dv, pvc, next, run, "", "")
}

// sourceReady holds a clone while its source cannot be read: the source claim must be bound
// for the copy or snapshot to start, and a snapshot must be ready before a volume is
// restored from it (the CSI provisioner refuses "snapshot ... is not Ready").
func (s *sim) sourceReady(ctx context.Context, dv *cdiv1.DataVolume, op operation, next cdiv1.DataVolumePhase) (bool, error) {
	switch {
	case op == opClonePVC && (next == cdiv1.CloneInProgress || next == cdiv1.SnapshotForSmartCloneInProgress):
		src, err := s.claim(ctx, sourceClaimKey(dv))
		return src != nil && src.Status.Phase == corev1.ClaimBound, err
	case op == opCloneSnapshot && next != cdiv1.CloneScheduled && next != cdiv1.CloneFromSnapshotSourceInProgress:
		snap, err := s.snapshot(ctx, sourceSnapshotKey(dv))
		return snap != nil && snap.readyToUse(), err
	}
	return true, nil
}

// transferFailed records an injected importer/cloner pod failure the way CDI shows one: the
// phase stays, restartCount grows, Running turns False with the error, a warning is emitted.
func (s *sim) transferFailed(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, op operation, cause *fault.Error) error {
	reason, msg := "ImportFailed", fmt.Sprintf("Failed to import into PVC %s", pvc.Name)
	if op != opImport {
		ns, name := cloneSource(dv)
		reason, msg = "CloneFailed", fmt.Sprintf("Cloning from %s/%s into %s/%s failed", ns, name, dv.Namespace, dv.Name)
	}
	s.events.Eventf(dv, nil, corev1.EventTypeWarning, reason, "Transfer", "%s", msg)
	return s.writeStatus(ctx, dv, func() bool {
		dv.Status.RestartCount++
		updateConditions(dv, pvc, "", "", running{status: corev1.ConditionFalse, reason: reasonError, message: cause.Error()})
		return true
	})
}

func isInProgress(p cdiv1.DataVolumePhase) bool {
	switch p {
	case cdiv1.ImportInProgress, cdiv1.CloneInProgress, cdiv1.SnapshotForSmartCloneInProgress, cdiv1.CloneFromSnapshotSourceInProgress:
		return true
	}
	return false
}

// completed is the Running condition once the transfer pod has finished.
func completed(op operation) running {
	msg := "Import Complete"
	if op != opImport {
		msg = "Clone Complete"
	}
	return running{status: corev1.ConditionFalse, reason: reasonCompleted, message: msg}
}

// waitsForFirstConsumer: a WaitForFirstConsumer class binds only once the scheduler picked a
// node for a pod using the claim (it annotates the claim), unless the DataVolume asks CDI for
// immediate binding.
func waitsForFirstConsumer(sc *storagev1.StorageClass, pvc *corev1.PersistentVolumeClaim, dv *cdiv1.DataVolume) bool {
	if sc == nil || sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		return false
	}
	if _, ok := dv.Annotations[annImmediateBinding]; ok {
		return false
	}
	return pvc.Annotations[annSelectedNode] == ""
}

func (s *sim) claim(ctx context.Context, key types.NamespacedName) (*corev1.PersistentVolumeClaim, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := s.Get(ctx, key, pvc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("getting PVC %s: %w", key, err)
	}
	return pvc, nil
}

// class returns the named StorageClass, nil if the name is empty or it does not exist.
func (s *sim) class(ctx context.Context, name *string) (*storagev1.StorageClass, error) {
	if name == nil || *name == "" {
		return nil, nil
	}
	sc := &storagev1.StorageClass{}
	if err := s.Get(ctx, client.ObjectKey{Name: *name}, sc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("getting StorageClass %s: %w", *name, err)
	}
	return sc, nil
}

// copyData gives a cloned or restored claim its source's bytes (with Options.Disks): the source
// claim's, or those its snapshot kept. The claim is named after the DataVolume.
func (s *sim) copyData(ctx context.Context, dv *cdiv1.DataVolume, op operation) error {
	d := s.opts.Disks
	if d == nil || (op != opClonePVC && op != opCloneSnapshot) {
		return nil
	}
	ns, name := cloneSource(dv)
	src := d.BackingFile(ns, name)
	if op == opCloneSnapshot {
		src = d.SnapshotFile(ns, name)
	}
	if err := d.Copy(ctx, src, d.BackingFile(dv.Namespace, dv.Name)); err != nil {
		return fmt.Errorf("DataVolume %s/%s: %w", dv.Namespace, dv.Name, err)
	}
	return nil
}
