package controller

import (
	"context"
	"errors"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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
