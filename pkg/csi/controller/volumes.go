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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CreateVolume creates (or finds, for a retried call) the DataVolume of the CSI volume name
// and returns once CDI reports it Succeeded.
func (s *Server) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if err := validateName("name", name); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	caps := req.GetVolumeCapabilities()
	if err := validateCapabilities(caps); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: mutable_parameters are not supported (no MODIFY_VOLUME)", name)
	}
	params, err := parseVolumeParams(req.GetParameters(), s.opts.Storage)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	layout := layoutFor(caps, s.opts.Storage)
	id := VolumeID(s.scope.ClusterName, name)
	release, err := s.inflight.Acquire(id, "CreateVolume")
	if err != nil {
		return nil, err
	}
	defer release()
	logger := klog.FromContext(ctx).WithValues("volumeID", id, "name", name)
	ctx = klog.NewContext(ctx, logger)

	src, minimum, err := s.contentSource(ctx, req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	size, err := allocatedBytes(req.GetCapacityRange(), layout.volumeMode, minimum)
	if errors.Is(err, errOutOfRange) {
		return nil, status.Errorf(codes.OutOfRange, "volume %q: %v", name, err)
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	where, err := place(s.opts.Storage, params.storageClass, name, req.GetAccessibilityRequirements())
	if err != nil {
		return nil, err
	}
	params.storageClass = where.storageClass
	want := s.newDataVolume(id, name, params, layout, size, src, contentSourceAnnotation(req.GetVolumeContentSource()))
	if err := s.ensureDataVolume(ctx, want, req); err != nil {
		return nil, err
	}
	v, err := s.waitSucceeded(ctx, id)
	if err != nil {
		return nil, err
	}
	logger.V(2).Info("Volume ready", "capacity", v.capacity, "storageClass", v.storageClass, "zones", v.zones)
	return &csi.CreateVolumeResponse{Volume: v.csi()}, nil
}

// contentSource resolves a request's content source to the DataVolume source and the smallest
// size the new volume may have. Sources must be ours, like every other handle.
func (s *Server) contentSource(ctx context.Context, cs *csi.VolumeContentSource) (*cdiv1.DataVolumeSource, int64, error) {
	switch {
	case cs == nil:
		return &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}, 0, nil
	case cs.GetSnapshot() != nil:
		snapID := cs.GetSnapshot().GetSnapshotId()
		if err := validateID("volume_content_source.snapshot.snapshot_id", snapID); err != nil {
			return nil, 0, status.Error(codes.InvalidArgument, err.Error())
		}
		snap, err := s.getSnapshot(ctx, snapID)
		if err != nil {
			return nil, 0, err
		}
		if !snap.ready {
			return nil, 0, status.Errorf(codes.Unavailable, "snapshot %q is not ready to use yet", snapID)
		}
		return &cdiv1.DataVolumeSource{Snapshot: &cdiv1.DataVolumeSourceSnapshot{
			Namespace: s.scope.Namespace, Name: snap.id}}, snap.size, nil
	case cs.GetVolume() != nil:
		srcID := cs.GetVolume().GetVolumeId()
		if err := validateID("volume_content_source.volume.volume_id", srcID); err != nil {
			return nil, 0, status.Error(codes.InvalidArgument, err.Error())
		}
		src, err := s.getVolume(ctx, srcID)
		if err != nil {
			return nil, 0, err
		}
		if !src.succeeded() || src.terminating() {
			return nil, 0, status.Errorf(codes.Unavailable, "source volume %q is not ready to be cloned (%s)", srcID, describeDataVolume(src.dv))
		}
		claim := src.dv.Status.ClaimName
		if claim == "" {
			claim = src.id
		}
		return &cdiv1.DataVolumeSource{PVC: &cdiv1.DataVolumeSourcePVC{Namespace: s.scope.Namespace, Name: claim}}, src.capacity, nil
	}
	return nil, 0, status.Error(codes.InvalidArgument, "volume_content_source has neither snapshot nor volume")
}

// newDataVolume is the DataVolume of a new volume.
func (s *Server) newDataVolume(id, name string, p volumeParams, layout infraLayout, size int64,
	src *cdiv1.DataVolumeSource, sourceAnn string) *cdiv1.DataVolume {
	ann := s.scope.OwnedAnnotations()
	ann[AnnVolumeName] = name
	ann[AnnCapacity] = strconv.FormatInt(size, 10)
	ann[AnnBus] = p.bus
	ann[annCDIImmediateBinding] = "true"
	ann[annCDIDeleteAfterCompletion] = "false"
	if sourceAnn != "" {
		ann[AnnContentSource] = sourceAnn
	}
	if p.tenantClaim != "" {
		ann[AnnTenantClaim] = p.tenantClaim
	}
	class, mode := p.storageClass, layout.volumeMode
	return &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   s.scope.Namespace,
			Name:        id,
			Labels:      s.scope.OwnedLabels(Component),
			Annotations: ann,
		},
		Spec: cdiv1.DataVolumeSpec{
			Source: src,
			Storage: &cdiv1.StorageSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{layout.accessMode},
				VolumeMode:       &mode,
				StorageClassName: &class,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
			},
		},
	}
}

// ensureDataVolume creates want unless a DataVolume of that name exists, in which case it must
// be the same volume (a retry) or the call fails with AlreadyExists.
func (s *Server) ensureDataVolume(ctx context.Context, want *cdiv1.DataVolume, req *csi.CreateVolumeRequest) error {
	for attempt := 0; ; attempt++ {
		existing := &cdiv1.DataVolume{}
		err := s.infra.GetInCluster(ctx, want.Name, existing)
		switch {
		case err == nil:
			return s.sameVolume(existing, want, req)
		case !apierrors.IsNotFound(err):
			return apiError(err, "looking up DataVolume %s/%s", want.Namespace, want.Name)
		}
		err = s.createWithinQuota(ctx, want)
		if !apierrors.IsAlreadyExists(err) || attempt > 0 {
			return err
		}
		// Created meanwhile (another replica, or the cache lags): wait until the cache has it
		// and compare.
		if err := s.waitCached(ctx, want.Name); err != nil {
			return err
		}
	}
}

// sameVolume decides whether an existing DataVolume is the one a retried CreateVolume asks for.
func (s *Server) sameVolume(existing, want *cdiv1.DataVolume, req *csi.CreateVolumeRequest) error {
	r := req.GetCapacityRange()
	name := want.Annotations[AnnVolumeName]
	v, ok := s.asVolume(existing)
	if !ok {
		return status.Errorf(codes.AlreadyExists,
			"volume %q: DataVolume %s/%s exists but was not created for it by this cluster's csi-controller", name, existing.Namespace, existing.Name)
	}
	if v.terminating() {
		return status.Errorf(codes.Aborted, "volume %q: DataVolume %s/%s is being deleted; retry later", name, existing.Namespace, existing.Name)
	}
	wantMode := *want.Spec.Storage.VolumeMode
	switch {
	case !fitsRange(v.capacity, r):
		return status.Errorf(codes.AlreadyExists, "volume %q exists with capacity %d bytes, outside the requested range [%d, %d]",
			name, v.capacity, r.GetRequiredBytes(), r.GetLimitBytes())
	case v.source != want.Annotations[AnnContentSource]:
		return status.Errorf(codes.AlreadyExists, "volume %q exists with content source %q, not %q", name, v.source, want.Annotations[AnnContentSource])
	case len(v.accessModes) != 1 || v.accessModes[0] != want.Spec.Storage.AccessModes[0]:
		return status.Errorf(codes.AlreadyExists, "volume %q exists with infra access modes %v, not %v", name, v.accessModes, want.Spec.Storage.AccessModes)
	case v.volumeMode != wantMode:
		return status.Errorf(codes.AlreadyExists, "volume %q exists with infra volume mode %s, not %s", name, v.volumeMode, wantMode)
	}
	return checkAccessible(v, s.opts.Storage, req.GetAccessibilityRequirements())
}

// createWithinQuota admits dv under the quotas, creates it and waits until the cache has it,
// so that later checks count it from the cache. The admission is a reservation held until
// then: concurrent creates check against each other's reservations without waiting for each
// other's API round trips.
func (s *Server) createWithinQuota(ctx context.Context, dv *cdiv1.DataVolume) error {
	size, _ := strconv.ParseInt(dv.Annotations[AnnCapacity], 10, 64)
	release, err := s.reserve(ctx, dv.Name, dv.Annotations[AnnVolumeName], size)
	if err != nil {
		return err
	}
	defer release()
	if !s.opts.Storage.RetainDataVolumes {
		if err := s.addClusterOwner(ctx, dv, "volume %q: owner reference for DataVolume %s/%s", dv.Annotations[AnnVolumeName], dv.Namespace, dv.Name); err != nil {
			return err
		}
	}
	if err := s.infra.CreateOwned(ctx, dv); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return err
		}
		return apiError(err, "volume %q: creating DataVolume %s/%s", dv.Annotations[AnnVolumeName], dv.Namespace, dv.Name)
	}
	klog.FromContext(ctx).V(2).Info("Created DataVolume", "dataVolume", klog.KObj(dv), "bytes", size)
	return s.waitCached(ctx, dv.Name)
}

// reserve admits one more volume id (CSI name, for the refusal) of size bytes if the quotas
// allow it beside the cached volumes and the other reservations, and holds that until release
// is called.
func (s *Server) reserve(ctx context.Context, id, name string, size int64) (release func(), err error) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	u, err := s.currentUsageLocked(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkQuota(u, 1, size, s.opts.Storage); err != nil {
		return nil, status.Errorf(codes.ResourceExhausted, "volume %q: %v", name, err)
	}
	s.reserved[id] = size
	return func() {
		s.quotaMu.Lock()
		defer s.quotaMu.Unlock()
		delete(s.reserved, id)
	}, nil
}

// waitCached waits until the cache holds the DataVolume name.
func (s *Server) waitCached(ctx context.Context, name string) error {
	err := s.notify.wait(ctx, kindDataVolume, name, func() (bool, error) {
		err := s.infra.GetInCluster(ctx, name, &cdiv1.DataVolume{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return waitError(err, fmt.Sprintf("waiting for DataVolume %s/%s to be observed", s.scope.Namespace, name), "")
	}
	return nil
}

// waitSucceeded waits, on DataVolume events, until volume id is Succeeded.
func (s *Server) waitSucceeded(ctx context.Context, id string) (*volume, error) {
	var v *volume
	var last *cdiv1.DataVolume
	err := s.notify.wait(ctx, kindDataVolume, id, func() (bool, error) {
		dv := &cdiv1.DataVolume{}
		err := s.infra.GetInCluster(ctx, id, dv)
		if apierrors.IsNotFound(err) {
			return false, status.Errorf(codes.Aborted, "volume %q: DataVolume %s/%s disappeared while being populated; retry", id, s.scope.Namespace, id)
		}
		if err != nil {
			return false, apiError(err, "reading DataVolume %s/%s", s.scope.Namespace, id)
		}
		last = dv
		var ok bool
		if v, ok = s.asVolume(dv); !ok {
			return false, notFoundVolume(id)
		}
		if v.terminating() {
			return false, status.Errorf(codes.Aborted, "volume %q: DataVolume is being deleted", id)
		}
		return v.succeeded(), nil
	})
	if err != nil {
		return nil, waitError(err, fmt.Sprintf("volume %q: waiting for DataVolume %s/%s to succeed", id, s.scope.Namespace, id), describeDataVolume(last))
	}
	return v, nil
}

// DeleteVolume deletes a volume's DataVolume (CDI's claim goes with it). IDs that are not ours
// (malformed, unknown, or another tenant's) are already "deleted" as far as the tenant can
// tell: OK, and nothing is touched. A volume still hot-plugged anywhere is refused.
func (s *Server) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := validateID("volume_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	logger := klog.FromContext(ctx).WithValues("volumeID", id)
	if !isVolumeHandle(id) {
		logger.V(2).Info("DeleteVolume: not a tenantcloud volume ID; nothing to delete")
		return &csi.DeleteVolumeResponse{}, nil
	}
	release, err := s.inflight.Acquire(id, "DeleteVolume")
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := s.getVolume(ctx, id)
	if status.Code(err) == codes.NotFound {
		logger.V(2).Info("DeleteVolume: no such volume of this tenant; nothing to delete")
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if !v.terminating() {
		att, err := s.attachments(ctx)
		if err != nil {
			return nil, err
		}
		if vms := att[id]; len(vms) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %q is still published to VM(s) %v; unpublish it first", id, vms)
		}
		if err := s.infra.DeleteOwned(ctx, v.dv, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			return nil, apiError(err, "volume %q: deleting DataVolume %s/%s", id, v.dv.Namespace, v.dv.Name)
		}
		logger.V(2).Info("Deleted DataVolume", "dataVolume", klog.KObj(v.dv))
	}
	// Answer once the cache agrees, so that ListVolumes and the quotas no longer count it.
	err = s.notify.wait(ctx, kindDataVolume, id, func() (bool, error) {
		dv := &cdiv1.DataVolume{}
		err := s.infra.GetInCluster(ctx, id, dv)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && (dv.DeletionTimestamp != nil || dv.UID != v.dv.UID), err
	})
	if err != nil {
		return nil, waitError(err, fmt.Sprintf("volume %q: waiting for DataVolume deletion", id), "")
	}
	return &csi.DeleteVolumeResponse{}, nil
}
