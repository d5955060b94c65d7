package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// controllerCapabilities are the Controller RPCs served. GET_CAPACITY needs a capacity quota
// to report against, snapshots need a VolumeSnapshotClass granted by the operator.
//
// SINGLE_NODE_MULTI_WRITER: the node plugin tells SINGLE_NODE_SINGLE_WRITER from
// SINGLE_NODE_MULTI_WRITER, and the controller accepts both (both are infra ReadWriteOnce).
// PUBLISH_READONLY is not advertised: read-only is enforced by the node's mount, the disk is
// always hot-plugged writable. VOLUME_CONDITION was replaced by GET/LIST_VOLUME_HEALTH in CSI
// 1.13.
func (s *Server) controllerCapabilities() []csi.ControllerServiceCapability_RPC_Type {
	caps := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
		csi.ControllerServiceCapability_RPC_GET_VOLUME,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	}
	if s.opts.Storage.MaxTotalBytes() > 0 {
		caps = append(caps, csi.ControllerServiceCapability_RPC_GET_CAPACITY)
	}
	if snapshotsConfigured(s.opts.Storage) {
		caps = append(caps,
			csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
			csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
			csi.ControllerServiceCapability_RPC_GET_SNAPSHOT)
	}
	return caps
}

// ControllerGetCapabilities lists controllerCapabilities.
func (s *Server) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var out []*csi.ControllerServiceCapability
	for _, c := range s.controllerCapabilities() {
		out = append(out, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: out}, nil
}

// ValidateVolumeCapabilities confirms the capabilities a volume can serve.
func (s *Server) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if err := validateID("volume_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: volume_capabilities are required", id)
	}
	v, err := s.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(req.GetMutableParameters()) > 0 {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: "mutable_parameters are not supported"}, nil
	}
	if _, err := parseVolumeParams(req.GetParameters(), s.opts.Storage); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	for i, c := range req.GetVolumeCapabilities() {
		if err := validateCapability(c); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume_capabilities[%d]: %v", i, err)}, nil
		}
		if ok, reason := capabilitySupported(c, v.accessModes); !ok {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume_capabilities[%d]: %s", i, reason)}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes lists the tenant's volumes with the VMs they are published to, paginated.
func (s *Server) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	selected, next, err := s.volumePage(ctx, req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	att, err := s.attachments(ctx)
	if err != nil {
		return nil, err
	}
	rsp := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range selected {
		rsp.Entries = append(rsp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: v.csi(),
			Status: &csi.ListVolumesResponse_VolumeStatus{PublishedNodeIds: att[v.id]},
		})
	}
	return rsp, nil
}

// ControllerGetVolume returns one volume and the VMs it is published to.
func (s *Server) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := validateID("volume_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	v, err := s.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	att, err := s.attachments(ctx)
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeResponse{
		Volume: v.csi(),
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{PublishedNodeIds: att[id]},
	}, nil
}

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

// GetCapacity reports how much the tenant may still allocate under its capacity quota (0 for
// an infra StorageClass it may not use, or when the volume quota is exhausted).
func (s *Server) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	for i, c := range req.GetVolumeCapabilities() {
		if err := validateCapability(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "volume_capabilities[%d]: %v", i, err)
		}
	}
	if _, err := parseVolumeParams(req.GetParameters(), s.opts.Storage); err != nil {
		return &csi.GetCapacityResponse{AvailableCapacity: 0, MaximumVolumeSize: wrapperspb.Int64(0)}, nil
	}
	u, err := s.currentUsage(ctx)
	if err != nil {
		return nil, err
	}
	avail, ok := availableBytes(u, s.opts.Storage)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "GetCapacity: no capacity quota is configured (storage.maxTotalCapacity)")
	}
	return &csi.GetCapacityResponse{AvailableCapacity: avail, MaximumVolumeSize: wrapperspb.Int64(avail)}, nil
}

// volumePage lists this tenant's volumes and returns the page starting at token, with the CSI
// error codes both list RPCs owe: Aborted for a token that no longer matches, InvalidArgument
// for a bad max_entries.
func (s *Server) volumePage(ctx context.Context, token string, maxEntries int32) ([]*volume, string, error) {
	vols, err := s.listVolumes(ctx)
	if err != nil {
		return nil, "", err
	}
	byID := make(map[string]*volume, len(vols))
	ids := make([]string, 0, len(vols))
	for _, v := range vols {
		byID[v.id] = v
		ids = append(ids, v.id)
	}
	selected, next, err := page(ids, token, maxEntries, isVolumeHandle)
	if errors.Is(err, errInvalidToken) {
		return nil, "", status.Errorf(codes.Aborted, "starting_token %q: %v", token, err)
	}
	if err != nil {
		return nil, "", status.Error(codes.InvalidArgument, err.Error())
	}
	out := make([]*volume, len(selected))
	for i, id := range selected {
		out[i] = byID[id]
	}
	return out, next, nil
}
