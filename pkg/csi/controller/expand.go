package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ControllerExpandVolume grows the volume's infra claim (a DataVolume's spec cannot change; the
// claim's request can) and returns once the storage reports the new size. A hot-plugged disk
// grows in the running guest; the node plugin then grows a filesystem.
func (s *Server) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := validateID("volume_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: capacity_range is required", id)
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := validateCapability(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "volume %q: volume_capability: %v", id, err)
		}
	}
	release, err := s.inflight.Acquire(id, "ControllerExpandVolume")
	if err != nil {
		return nil, err
	}
	defer release()
	logger := klog.FromContext(ctx).WithValues("volumeID", id)
	ctx = klog.NewContext(ctx, logger)

	v, err := s.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if v.terminating() || !v.succeeded() {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %q cannot be expanded now (%s)", id, describeDataVolume(v.dv))
	}
	size, err := allocatedBytes(req.GetCapacityRange(), v.volumeMode, 0)
	if errors.Is(err, errOutOfRange) {
		return nil, status.Errorf(codes.OutOfRange, "volume %q: %v", id, err)
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", id, err)
	}
	pvc, err := s.infra.ClaimOf(ctx, v.dv)
	if err != nil {
		return nil, apiError(err, "volume %q: looking up its claim", id)
	}
	oldRequest := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	newRequest := inflate(size, v.capacity, oldRequest.Value())
	if size > v.capacity {
		// Ask the apiserver first (dry run): a class without allowVolumeExpansion is refused
		// by its admission, and then nothing may be recorded.
		if err := s.resizeClaim(ctx, id, pvc, newRequest, true); err != nil {
			return nil, err
		}
		if err := s.raiseCapacity(ctx, v, size, newRequest); err != nil {
			return nil, err
		}
	} else {
		// Shrinking is not possible. A retry must still finish an expansion a crash cut short:
		// the claim request recorded with the capacity says what the claim has to reach.
		size = v.capacity
		recorded, _ := strconv.ParseInt(v.dv.Annotations[AnnClaimRequest], 10, 64)
		newRequest = max(oldRequest.Value(), recorded)
	}
	if oldRequest.Value() < newRequest {
		if err := s.resizeClaim(ctx, id, pvc, newRequest, false); err != nil {
			return nil, err
		}
		logger.V(2).Info("Requested claim resize", "claim", klog.KObj(pvc), "request", newRequest)
	}
	if err := s.waitResized(ctx, pvc.Name, newRequest); err != nil {
		return nil, err
	}
	s.events.Eventf(v.dv, nil, corev1.EventTypeNormal, "Expanded", "Expand", "capacity %s", formatBytes(size))
	return &csi.ControllerExpandVolumeResponse{
		CapacityBytes:         size,
		NodeExpansionRequired: nodeExpansionRequired(req.GetVolumeCapability()),
	}, nil
}

// resizeClaim patches the claim's storage request (or only validates the patch, dryRun).
func (s *Server) resizeClaim(ctx context.Context, id string, pvc *corev1.PersistentVolumeClaim, request int64, dryRun bool) error {
	changed := pvc.DeepCopy()
	changed.Spec.Resources.Requests[corev1.ResourceStorage] = *resource.NewQuantity(request, resource.BinarySI)
	var opts []client.PatchOption
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	if err := s.infra.PatchInCluster(ctx, changed, client.MergeFrom(pvc), opts...); err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			return status.Errorf(codes.FailedPrecondition, "volume %q: the infra claim cannot be resized: %v", id, err)
		}
		return apiError(err, "volume %q: resizing claim %s", id, pvc.Name)
	}
	return nil
}

// raiseCapacity records the new capacity and the claim request that holds it on the DataVolume
// (checked against the quota first), before the claim is resized: a crash in between leaves a
// larger recorded size that the retry completes, never a grown disk the quota does not count.
func (s *Server) raiseCapacity(ctx context.Context, v *volume, size, claimRequest int64) error {
	// The lock is held until the cache has the new capacity: an expansion has no reservation
	// of its own, and expansions are rare enough not to need one.
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	u, err := s.currentUsageLocked(ctx)
	if err != nil {
		return err
	}
	if err := checkQuota(u, 0, size-v.capacity, s.opts.Storage); err != nil {
		return status.Errorf(codes.ResourceExhausted, "volume %q: expanding to %s: %v", v.id, formatBytes(size), err)
	}
	dv := v.dv.DeepCopy()
	patch := client.MergeFromWithOptions(v.dv, client.MergeFromWithOptimisticLock{})
	dv.Annotations[AnnCapacity] = strconv.FormatInt(size, 10)
	dv.Annotations[AnnClaimRequest] = strconv.FormatInt(claimRequest, 10)
	if err := s.infra.PatchOwned(ctx, dv, patch); err != nil {
		return apiError(err, "volume %q: recording the new capacity", v.id)
	}
	// Wait for the cache, so the quota check of the next call counts the new size.
	err = s.notify.wait(ctx, kindDataVolume, v.id, func() (bool, error) {
		cur := &cdiv1.DataVolume{}
		if err := s.infra.GetInCluster(ctx, dv.Name, cur); err != nil {
			return false, err
		}
		return cur.ResourceVersion == dv.ResourceVersion || cur.Annotations[AnnCapacity] == dv.Annotations[AnnCapacity], nil
	})
	if err != nil {
		return waitError(err, fmt.Sprintf("volume %q: waiting for the new capacity to be observed", v.id), "")
	}
	return nil
}

// waitResized waits, on claim events, until the claim has request bytes: status.capacity
// reached it, or the controller-side resize is done and only the node's filesystem resize is
// pending (Filesystem claims: the infra storage finished its part).
func (s *Server) waitResized(ctx context.Context, claim string, request int64) error {
	last := ""
	err := s.notify.wait(ctx, kindClaim, claim, func() (bool, error) {
		pvc := &corev1.PersistentVolumeClaim{}
		if err := s.infra.GetInCluster(ctx, claim, pvc); err != nil {
			return false, apiError(err, "reading claim %s", claim)
		}
		capacity := pvc.Status.Capacity[corev1.ResourceStorage]
		last = fmt.Sprintf("capacity %s", capacity.String())
		for _, c := range pvc.Status.Conditions {
			if c.Status == corev1.ConditionTrue {
				last += fmt.Sprintf(", %s %s", c.Type, c.Message)
			}
		}
		if capacity.Value() >= request {
			return true, nil
		}
		allocated := pvc.Status.AllocatedResources[corev1.ResourceStorage]
		nodePending := pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage] == corev1.PersistentVolumeClaimNodeResizePending
		for _, c := range pvc.Status.Conditions {
			if c.Type == corev1.PersistentVolumeClaimFileSystemResizePending && c.Status == corev1.ConditionTrue {
				nodePending = true
			}
		}
		return nodePending && allocated.Value() >= request, nil
	})
	if err != nil {
		return waitError(err, fmt.Sprintf("waiting for claim %s/%s to reach %d bytes", s.scope.Namespace, claim, request), last)
	}
	return nil
}
