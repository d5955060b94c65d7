package controller

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// health is a volume's health from the infra side: its DataVolume and claim.
func (s *Server) health(ctx context.Context, v *volume) (*csi.VolumeHealth, error) {
	h := &csi.VolumeHealth{VolumeId: v.id}
	add := func(t csi.VolumeHealthErrorType, reason, format string, args ...any) {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: t, Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	if v.dv.Status.Phase == cdiv1.Failed {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, "DataVolumeFailed", "DataVolume %s failed: %s", v.dv.Name, describeDataVolume(v.dv))
		return h, nil
	}
	if !v.succeeded() {
		return h, nil // still being created: nothing adverse known
	}
	pvc, err := s.infra.ClaimOf(ctx, v.dv)
	switch {
	case apierrors.IsNotFound(err):
		add(csi.VolumeHealthErrorType_INACCESSIBLE, "ClaimMissing", "the infra claim of DataVolume %s is gone", v.dv.Name)
	case err != nil:
		return nil, apiError(err, "volume %q: reading its claim", v.id)
	case pvc.Status.Phase == corev1.ClaimLost:
		add(csi.VolumeHealthErrorType_DATA_LOSS, "ClaimLost", "the infra claim %s lost its PersistentVolume", pvc.Name)
	case pvc.Status.Phase != corev1.ClaimBound:
		add(csi.VolumeHealthErrorType_INACCESSIBLE, "ClaimNotBound", "the infra claim %s is %s", pvc.Name, pvc.Status.Phase)
	default:
		for _, c := range pvc.Status.Conditions {
			if c.Type == corev1.PersistentVolumeClaimControllerResizeError && c.Status == corev1.ConditionTrue {
				add(csi.VolumeHealthErrorType_DEGRADED, "ResizeFailed", "resizing the infra claim %s failed: %s", pvc.Name, c.Message)
			}
		}
	}
	return h, nil
}

// ControllerGetVolumeHealth reports one volume's health.
func (s *Server) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if err := validateID("volume_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	v, err := s.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	h, err := s.health(ctx, v)
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: h}, nil
}

// ControllerListVolumeHealth reports every volume's health, paginated like ListVolumes.
func (s *Server) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	selected, next, err := s.volumePage(ctx, req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	rsp := &csi.ControllerListVolumeHealthResponse{NextToken: next}
	for _, v := range selected {
		h, err := s.health(ctx, v)
		if err != nil {
			return nil, err
		}
		rsp.Entries = append(rsp.Entries, h)
	}
	return rsp, nil
}
