package controller

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
