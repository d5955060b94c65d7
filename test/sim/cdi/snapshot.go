package cdi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

const (
	finalizerSnapshotBound  = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
	annDefaultSnapshotClass = "snapshot.storage.kubernetes.io/is-default-class"
)

func (s *sim) setupSnapshots(mgr manager.Manager) error {
	return builder.ControllerManagedBy(mgr).Named("sim-snapshot-controller").
		For(newSnapshot()).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(s.snapshotsOfClaim)).
		Complete(reconcile.Func(s.reconcileSnapshot))
}

// reconcileSnapshot plays the snapshot-controller (class defaulting, content creation and
// binding, status) and LINSTOR's csi-snapshotter (CreateSnapshot after PhaseDelay) for
// dynamically provisioned VolumeSnapshots. Pre-provisioned snapshots (spec.source.
// volumeSnapshotContentName) are not simulated.
func (s *sim) reconcileSnapshot(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithValues("volumesnapshot", req.NamespacedName))
	vs, err := s.snapshot(ctx, req.NamespacedName)
	if err != nil || vs == nil {
		return reconcile.Result{}, err
	}
	if vs.GetDeletionTimestamp() != nil {
		return reconcile.Result{}, s.deleteSnapshot(ctx, vs)
	}
	if vs.readyToUse() || vs.sourceClaim() == "" {
		return reconcile.Result{}, nil
	}
	class, msg, err := s.snapshotClass(ctx, vs)
	if err != nil || msg != "" {
		return s.snapshotFailed(ctx, vs, "SnapshotClassError", msg, err)
	}
	if vs.contentName() == "" {
		return s.createContent(ctx, vs, class)
	}
	return s.cutSnapshot(ctx, vs)
}

// snapshotClass resolves (and for an unset class, defaults) the snapshot's class. A non-empty
// message is the snapshot-controller's error for the snapshot's status.
func (s *sim) snapshotClass(ctx context.Context, vs *volumeSnapshot) (*unstructured.Unstructured, string, error) {
	if name := vs.className(); name != "" {
		class := newUnstructured(snapshotClassGVK)
		if err := s.Get(ctx, client.ObjectKey{Name: name}, class); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Sprintf("Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io %q not found", name), nil
			}
			return nil, "", fmt.Errorf("getting VolumeSnapshotClass %s: %w", name, err)
		}
		return class, "", nil
	}
	pv, msg, err := s.snapshotVolume(ctx, vs)
	if err != nil || msg != "" {
		return nil, "Failed to set default snapshot class with error " + msg, err
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(snapshotClassGVK.GroupVersion().WithKind("VolumeSnapshotClassList"))
	if err := s.List(ctx, list); err != nil {
		return nil, "", fmt.Errorf("listing VolumeSnapshotClasses: %w", err)
	}
	var defaults []unstructured.Unstructured
	for _, c := range list.Items {
		if d, _, _ := unstructured.NestedString(c.Object, "driver"); d == pv.Spec.CSI.Driver && c.GetAnnotations()[annDefaultSnapshotClass] == "true" {
			defaults = append(defaults, c)
		}
	}
	switch len(defaults) {
	case 0:
		return nil, "Failed to set default snapshot class with error cannot find default snapshot class", nil
	case 1:
	default:
		return nil, fmt.Sprintf("Failed to set default snapshot class with error %d default snapshot classes were found", len(defaults)), nil
	}
	class := &defaults[0]
	err = s.writeObject(ctx, vs.Unstructured, func() bool {
		if vs.className() != "" {
			return false
		}
		return unstructured.SetNestedField(vs.Object, class.GetName(), "spec", "volumeSnapshotClassName") == nil
	})
	return class, "", err
}

// snapshotVolume is the bound PV of the snapshot's source claim; a message says why there is
// none, in the snapshot-controller's words.
func (s *sim) snapshotVolume(ctx context.Context, vs *volumeSnapshot) (*corev1.PersistentVolume, string, error) {
	pvc, err := s.claim(ctx, client.ObjectKey{Namespace: vs.GetNamespace(), Name: vs.sourceClaim()})
	if err != nil {
		return nil, "", err
	}
	if pvc == nil {
		return nil, fmt.Sprintf("snapshot controller failed to update %s on API server: cannot get claim from snapshot", vs.GetName()), nil
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return nil, fmt.Sprintf("the PVC %s is not yet bound to a PV, will not attempt to take a snapshot", pvc.Name), nil
	}
	pv := &corev1.PersistentVolume{}
	if err := s.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
		return nil, "", client.IgnoreNotFound(err)
	}
	if pv.Spec.CSI == nil {
		return nil, fmt.Sprintf("cannot find CSI PersistentVolumeSource for volume %s", pv.Name), nil
	}
	return pv, "", nil
}

// createContent creates the VolumeSnapshotContent and binds the snapshot to it.
func (s *sim) createContent(ctx context.Context, vs *volumeSnapshot, class *unstructured.Unstructured) (reconcile.Result, error) {
	pv, msg, err := s.snapshotVolume(ctx, vs)
	if err != nil || msg != "" {
		return s.snapshotFailed(ctx, vs, "SnapshotContentCreationFailed", "Failed to create snapshot content with error "+msg, err)
	}
	driver, _, _ := unstructured.NestedString(class.Object, "driver")
	policy, _, _ := unstructured.NestedString(class.Object, "deletionPolicy")
	name := "snapcontent-" + string(vs.GetUID())
	content := newUnstructured(snapshotContentGVK)
	content.SetName(name)
	content.Object["spec"] = map[string]any{
		"driver":                  driver,
		"deletionPolicy":          policy,
		"volumeSnapshotClassName": class.GetName(),
		"source":                  map[string]any{"volumeHandle": pv.Spec.CSI.VolumeHandle},
		"sourceVolumeMode":        string(volumeModeOf(pv.Spec.VolumeMode)),
		"volumeSnapshotRef": map[string]any{
			"apiVersion": snapshotGVK.GroupVersion().String(), "kind": snapshotGVK.Kind,
			"namespace": vs.GetNamespace(), "name": vs.GetName(), "uid": string(vs.GetUID()),
		},
	}
	if err := s.Create(ctx, content); err != nil && !apierrors.IsAlreadyExists(err) {
		return reconcile.Result{}, fmt.Errorf("creating VolumeSnapshotContent %s: %w", name, err)
	}
	if err := s.writeObject(ctx, vs.Unstructured, func() bool {
		if slices.Contains(vs.GetFinalizers(), finalizerSnapshotBound) {
			return false
		}
		vs.SetFinalizers(append(vs.GetFinalizers(), finalizerSnapshotBound))
		return true
	}); err != nil {
		return reconcile.Result{}, fmt.Errorf("adding finalizer to VolumeSnapshot: %w", err)
	}
	s.events.Eventf(vs.Unstructured, nil, corev1.EventTypeNormal, "CreatingSnapshot", "Snapshot",
		"Waiting for a snapshot %s/%s to be created by the CSI driver.", vs.GetNamespace(), vs.GetName())
	return reconcile.Result{}, s.writeStatus(ctx, vs.Unstructured, func() bool {
		status, _, _ := unstructured.NestedMap(vs.Object, "status")
		if status == nil {
			status = map[string]any{}
		}
		status["boundVolumeSnapshotContentName"] = name
		status["readyToUse"] = false
		delete(status, "error")
		vs.Object["status"] = status
		return true
	})
}

// cutSnapshot is the CSI CreateSnapshot, after PhaseDelay, then readyToUse on both objects.
func (s *sim) cutSnapshot(ctx context.Context, vs *volumeSnapshot) (reconcile.Result, error) {
	if res, wait := s.wait(vs.GetUID(), "snapshot", s.opts.PhaseDelay); wait {
		return res, nil
	}
	if res, held := s.stalled(FaultSnapshotReady); held {
		return res, nil
	}
	content := newUnstructured(snapshotContentGVK)
	if err := s.Get(ctx, client.ObjectKey{Name: vs.contentName()}, content); err != nil {
		return reconcile.Result{}, fmt.Errorf("getting VolumeSnapshotContent %s: %w", vs.contentName(), err)
	}
	handle, _, _ := unstructured.NestedString(content.Object, "spec", "source", "volumeHandle")
	if err := s.opts.Faults.Check(ctx, FaultSnapshotReady); err != nil {
		var injected *fault.Error
		if !errors.As(err, &injected) {
			return reconcile.Result{}, err
		}
		s.clock.restart(vs.GetUID(), "snapshot")
		msg := fmt.Sprintf("Failed to check and update snapshot content: failed to take snapshot of the volume %s: %q",
			handle, "rpc error: code = Internal desc = "+err.Error())
		return s.snapshotFailed(ctx, vs, "SnapshotContentCheckandUpdateFailed", msg, nil)
	}
	pv := &corev1.PersistentVolume{}
	if err := s.Get(ctx, client.ObjectKey{Name: handle}, pv); err != nil {
		if apierrors.IsNotFound(err) {
			return s.snapshotFailed(ctx, vs, "SnapshotContentCheckandUpdateFailed",
				fmt.Sprintf("Failed to check and update snapshot content: failed to take snapshot of the volume %s: %q", handle, "source volume not found"), nil)
		}
		return reconcile.Result{}, err
	}
	if s.opts.Disks != nil {
		d := s.opts.Disks
		if err := d.Copy(ctx, d.BackingFile(vs.GetNamespace(), vs.sourceClaim()), d.SnapshotFile(vs.GetNamespace(), vs.GetName())); err != nil {
			return reconcile.Result{}, fmt.Errorf("cutting snapshot %s/%s: %w", vs.GetNamespace(), vs.GetName(), err)
		}
	}
	size := pv.Spec.Capacity.Storage().Value()
	now := time.Now()
	if err := s.writeStatus(ctx, content, func() bool {
		content.Object["status"] = map[string]any{
			"snapshotHandle": "snapshot-" + string(vs.GetUID()),
			"creationTime":   now.UnixNano(),
			"readyToUse":     true,
			"restoreSize":    size,
		}
		return true
	}); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating VolumeSnapshotContent %s status: %w", content.GetName(), err)
	}
	if err := s.writeStatus(ctx, vs.Unstructured, func() bool {
		vs.Object["status"] = map[string]any{
			"boundVolumeSnapshotContentName": content.GetName(),
			"creationTime":                   now.UTC().Format(time.RFC3339),
			"readyToUse":                     true,
			"restoreSize":                    resource.NewQuantity(size, resource.BinarySI).String(),
		}
		return true
	}); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating VolumeSnapshot status: %w", err)
	}
	s.clock.done(vs.GetUID(), "snapshot")
	s.events.Eventf(vs.Unstructured, nil, corev1.EventTypeNormal, "SnapshotCreated", "Snapshot",
		"Snapshot %s/%s was successfully created by the CSI driver.", vs.GetNamespace(), vs.GetName())
	s.events.Eventf(vs.Unstructured, nil, corev1.EventTypeNormal, "SnapshotReady", "Snapshot",
		"Snapshot %s/%s is ready to use.", vs.GetNamespace(), vs.GetName())
	return reconcile.Result{}, nil
}

// snapshotFailed writes status.error (readyToUse false) and a warning, and retries later; the
// claim watch also brings the snapshot back when its source appears or binds.
func (s *sim) snapshotFailed(ctx context.Context, vs *volumeSnapshot, reason, msg string, err error) (reconcile.Result, error) {
	if err != nil {
		return reconcile.Result{}, err
	}
	s.events.Eventf(vs.Unstructured, nil, corev1.EventTypeWarning, reason, "Snapshot", "%s", msg)
	werr := s.writeStatus(ctx, vs.Unstructured, func() bool {
		if vs.errorMessage() == msg && !vs.readyToUse() {
			return false
		}
		status, _, _ := unstructured.NestedMap(vs.Object, "status")
		if status == nil {
			status = map[string]any{}
		}
		status["readyToUse"] = false
		status["error"] = map[string]any{"message": msg, "time": metav1.Now().UTC().Format(time.RFC3339)}
		vs.Object["status"] = status
		return true
	})
	return reconcile.Result{RequeueAfter: max(s.retryDelay(), time.Second)}, werr
}

// deleteSnapshot honours the content's deletionPolicy and releases the snapshot.
func (s *sim) deleteSnapshot(ctx context.Context, vs *volumeSnapshot) error {
	if name := vs.contentName(); name != "" {
		content := newUnstructured(snapshotContentGVK)
		err := s.Get(ctx, client.ObjectKey{Name: name}, content)
		switch {
		case err == nil:
			if policy, _, _ := unstructured.NestedString(content.Object, "spec", "deletionPolicy"); policy == "Delete" {
				if err := s.Delete(ctx, content); err != nil && !apierrors.IsNotFound(err) {
					return fmt.Errorf("deleting VolumeSnapshotContent %s: %w", name, err)
				}
			}
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("getting VolumeSnapshotContent %s: %w", name, err)
		}
	}
	if s.opts.Disks != nil {
		if err := s.opts.Disks.DeleteSnapshot(vs.GetNamespace(), vs.GetName()); err != nil {
			return err
		}
	}
	s.clock.forget(vs.GetUID())
	return removeFinalizer(ctx, s, vs.Unstructured, finalizerSnapshotBound)
}

// snapshotsOfClaim maps a claim to the unfinished snapshots of it.
func (s *sim) snapshotsOfClaim(ctx context.Context, obj client.Object) []reconcile.Request {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(snapshotGVK.GroupVersion().WithKind("VolumeSnapshotList"))
	if err := s.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		vs := volumeSnapshot{&list.Items[i]}
		if vs.sourceClaim() == obj.GetName() && !vs.readyToUse() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(vs.Unstructured)})
		}
	}
	return reqs
}
