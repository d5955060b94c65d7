package cdi

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

const messageFSResizePending = "Waiting for user to (re-)start a pod to finish file system resize of volume on node."

// resize plays the external-resizer (ControllerExpandVolume) and, for Filesystem claims,
// kubelet's NodeExpandVolume. The apiserver only admits a larger request on a bound claim of
// a class with allowVolumeExpansion, so whatever reaches here is a legal expansion.
//
// LINSTOR's ControllerExpandVolume answers NodeExpansionRequired = !Block. So a Block claim is
// done once the PV grows (status.capacity follows at once); a Filesystem claim then waits in
// FileSystemResizePending until a scheduled pod uses it (kubelet grows the filesystem).
func (s *sim) resize(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (reconcile.Result, error) {
	pv := &corev1.PersistentVolume{}
	if err := s.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver {
		return reconcile.Result{}, nil
	}
	request := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	want := linstorCapacity(request.Value())
	pvCap := pv.Spec.Capacity.Storage().Value()
	switch {
	case want > pvCap:
		return s.expandController(ctx, pvc, pv, request, want)
	case volumeModeOf(pvc.Spec.VolumeMode) == corev1.PersistentVolumeFilesystem && pvc.Status.Capacity.Storage().Value() < pvCap:
		return s.expandNode(ctx, pvc, pvCap)
	}
	return reconcile.Result{}, nil
}

func (s *sim) expandController(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume,
	request resource.Quantity, want int64) (reconcile.Result, error) {
	step := "resize/" + strconv.FormatInt(want, 10)
	if !hasClaimCondition(pvc, corev1.PersistentVolumeClaimResizing) {
		if err := s.resizeStarted(ctx, pvc, pv, request); err != nil {
			return reconcile.Result{}, err
		}
	}
	if res, wait := s.wait(pvc.UID, step, s.opts.ResizeDelay); wait {
		return res, nil
	}
	if res, held := s.stalled(FaultPVCResize); held {
		return res, nil
	}
	if err := s.opts.Faults.Check(ctx, FaultPVCResize); err != nil {
		var injected *fault.Error
		if !errors.As(err, &injected) {
			return reconcile.Result{}, err
		}
		s.clock.restart(pvc.UID, step)
		msg := fmt.Sprintf("resize volume %q by resizer %q failed: rpc error: code = Internal desc = %v", pv.Name, Driver, err)
		s.events.Eventf(pvc, nil, corev1.EventTypeWarning, "VolumeResizeFailed", "Resize", "%s", msg)
		return reconcile.Result{RequeueAfter: max(s.opts.ResizeDelay, stallPoll)}, s.writeStatus(ctx, pvc, func() bool {
			setClaimCondition(pvc, corev1.PersistentVolumeClaimControllerResizeError, msg)
			return true
		})
	}
	capacity := *resource.NewQuantity(want, resource.BinarySI)
	if err := s.writeObject(ctx, pv, func() bool {
		if pv.Spec.Capacity.Storage().Cmp(capacity) >= 0 {
			return false
		}
		pv.Spec.Capacity[corev1.ResourceStorage] = capacity
		return true
	}); err != nil {
		return reconcile.Result{}, fmt.Errorf("growing PV %s: %w", pv.Name, err)
	}
	s.clock.done(pvc.UID, step)
	block := volumeModeOf(pvc.Spec.VolumeMode) == corev1.PersistentVolumeBlock
	klog.FromContext(ctx).V(2).Info("Controller expansion done", "pv", pv.Name, "capacity", capacity.String(), "nodeExpansion", !block)
	if block {
		s.events.Eventf(pvc, nil, corev1.EventTypeNormal, "VolumeResizeSuccessful", "Resize", "Resize volume succeeded")
		return reconcile.Result{}, s.resizeFinished(ctx, pvc, capacity)
	}
	s.events.Eventf(pvc, nil, corev1.EventTypeNormal, "FileSystemResizeRequired", "Resize", "Require file system resize of volume on node")
	return reconcile.Result{}, s.writeStatus(ctx, pvc, func() bool {
		removeClaimConditions(pvc, corev1.PersistentVolumeClaimResizing, corev1.PersistentVolumeClaimControllerResizeError)
		setClaimCondition(pvc, corev1.PersistentVolumeClaimFileSystemResizePending, messageFSResizePending)
		setAllocatedStatus(pvc, corev1.PersistentVolumeClaimNodeResizePending)
		return true
	})
}

// resizeStarted records what the resizer records when it takes a claim: the storage-resizer
// annotation (set by kube-controller-manager's expand controller), the Resizing condition
// and the allocated size being worked on.
func (s *sim) resizeStarted(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, request resource.Quantity) error {
	if err := s.writeObject(ctx, pvc, func() bool {
		if pvc.Annotations[annStorageResizer] == Driver {
			return false
		}
		setAnnotation(pvc, annStorageResizer, Driver)
		return true
	}); err != nil {
		return fmt.Errorf("annotating PVC %s/%s for resize: %w", pvc.Namespace, pvc.Name, err)
	}
	s.events.Eventf(pvc, nil, corev1.EventTypeNormal, "Resizing", "Resize", "External resizer is resizing volume %s", pv.Name)
	return s.writeStatus(ctx, pvc, func() bool {
		setClaimCondition(pvc, corev1.PersistentVolumeClaimResizing, "")
		if pvc.Status.AllocatedResources == nil {
			pvc.Status.AllocatedResources = corev1.ResourceList{}
		}
		pvc.Status.AllocatedResources[corev1.ResourceStorage] = request
		setAllocatedStatus(pvc, corev1.PersistentVolumeClaimControllerResizeInProgress)
		return true
	})
}

// expandNode is kubelet growing the filesystem of a claim a running pod uses.
func (s *sim) expandNode(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pvCap int64) (reconcile.Result, error) {
	var pods corev1.PodList
	if err := s.List(ctx, &pods, client.InNamespace(pvc.Namespace)); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing pods of %s: %w", pvc.Namespace, err)
	}
	inUse := false
	for _, pod := range pods.Items {
		if pod.Spec.NodeName != "" && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed && podUsesClaim(&pod, pvc.Name) {
			inUse = true
			break
		}
	}
	if !inUse {
		return reconcile.Result{}, nil // the pod watch brings us back
	}
	step := "noderesize/" + strconv.FormatInt(pvCap, 10)
	if res, wait := s.wait(pvc.UID, step, s.opts.ResizeDelay); wait {
		return res, nil
	}
	s.clock.done(pvc.UID, step)
	s.events.Eventf(pvc, nil, corev1.EventTypeNormal, "FileSystemResizeSuccessful", "Resize",
		"MountVolume.NodeExpandVolume succeeded for volume %q", pvc.Spec.VolumeName)
	return reconcile.Result{}, s.resizeFinished(ctx, pvc, *resource.NewQuantity(pvCap, resource.BinarySI))
}

func (s *sim) resizeFinished(ctx context.Context, pvc *corev1.PersistentVolumeClaim, capacity resource.Quantity) error {
	return s.writeStatus(ctx, pvc, func() bool {
		if pvc.Status.Capacity == nil {
			pvc.Status.Capacity = corev1.ResourceList{}
		}
		pvc.Status.Capacity[corev1.ResourceStorage] = capacity
		removeClaimConditions(pvc, corev1.PersistentVolumeClaimResizing, corev1.PersistentVolumeClaimControllerResizeError,
			corev1.PersistentVolumeClaimFileSystemResizePending)
		delete(pvc.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
		if len(pvc.Status.AllocatedResourceStatuses) == 0 {
			pvc.Status.AllocatedResourceStatuses = nil
		}
		return true
	})
}

func hasClaimCondition(pvc *corev1.PersistentVolumeClaim, t corev1.PersistentVolumeClaimConditionType) bool {
	for _, c := range pvc.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func setClaimCondition(pvc *corev1.PersistentVolumeClaim, t corev1.PersistentVolumeClaimConditionType, msg string) {
	now := metav1.Now()
	for i := range pvc.Status.Conditions {
		if c := &pvc.Status.Conditions[i]; c.Type == t {
			if c.Status != corev1.ConditionTrue {
				c.LastTransitionTime = now
			}
			c.Status, c.Message, c.LastProbeTime = corev1.ConditionTrue, msg, now
			return
		}
	}
	pvc.Status.Conditions = append(pvc.Status.Conditions, corev1.PersistentVolumeClaimCondition{
		Type: t, Status: corev1.ConditionTrue, Message: msg, LastTransitionTime: now, LastProbeTime: now,
	})
}

func removeClaimConditions(pvc *corev1.PersistentVolumeClaim, kinds ...corev1.PersistentVolumeClaimConditionType) {
	var kept []corev1.PersistentVolumeClaimCondition
	for _, c := range pvc.Status.Conditions {
		drop := false
		for _, t := range kinds {
			drop = drop || c.Type == t
		}
		if !drop {
			kept = append(kept, c)
		}
	}
	pvc.Status.Conditions = kept
}

func setAllocatedStatus(pvc *corev1.PersistentVolumeClaim, st corev1.ClaimResourceStatus) {
	if pvc.Status.AllocatedResourceStatuses == nil {
		pvc.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{}
	}
	pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage] = st
}
