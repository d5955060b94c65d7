package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// snapshot is a VolumeSnapshot read as a CSI snapshot.
type snapshot struct {
	obj          *unstructured.Unstructured
	id, name     string
	sourceVolume string
	ready        bool
	size         int64
	created      time.Time
	errMessage   string
}

// asSnapshot reads u as a snapshot of this tenant's csi-controller: owned, named SnapshotID of
// its annotated CSI name, and taken of one of our volume IDs.
func (s *Server) asSnapshot(u *unstructured.Unstructured) (*snapshot, bool) {
	if !s.scope.OwnedBy(u, Component) || !IsSnapshotID(u.GetName()) {
		return nil, false
	}
	ann := u.GetAnnotations()
	name := ann[AnnSnapshotName]
	if name == "" || SnapshotID(s.scope.ClusterName, name) != u.GetName() || !isVolumeHandle(ann[AnnSourceVolume]) {
		return nil, false
	}
	sn := &snapshot{obj: u, id: u.GetName(), name: name, sourceVolume: ann[AnnSourceVolume], created: u.GetCreationTimestamp().Time}
	sn.ready, _, _ = unstructured.NestedBool(u.Object, "status", "readyToUse")
	sn.errMessage, _, _ = unstructured.NestedString(u.Object, "status", "error", "message")
	if t, _, _ := unstructured.NestedString(u.Object, "status", "creationTime"); t != "" {
		if parsed, err := time.Parse(time.RFC3339, t); err == nil {
			sn.created = parsed
		}
	}
	if n, err := strconv.ParseInt(ann[AnnCapacity], 10, 64); err == nil && n > 0 {
		sn.size = n
	} else if rs, _, _ := unstructured.NestedString(u.Object, "status", "restoreSize"); rs != "" {
		if q, err := resource.ParseQuantity(rs); err == nil {
			sn.size = q.Value()
		}
	}
	return sn, true
}

func (sn *snapshot) terminating() bool { return sn.obj.GetDeletionTimestamp() != nil }

func (sn *snapshot) csi() *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     sn.id,
		SourceVolumeId: sn.sourceVolume,
		SizeBytes:      sn.size,
		CreationTime:   timestamppb.New(sn.created),
		ReadyToUse:     sn.ready,
	}
}

func notFoundSnapshot(id string) error {
	return status.Errorf(codes.NotFound, "snapshot %q not found: no snapshot of this cluster has that ID", id)
}

// getSnapshot resolves a snapshot ID through the ownership-checked lookup.
func (s *Server) getSnapshot(ctx context.Context, id string) (*snapshot, error) {
	if !IsSnapshotID(id) || !snapshotsConfigured(s.opts.Storage) {
		return nil, notFoundSnapshot(id)
	}
	u, err := s.infra.OwnedVolumeSnapshot(ctx, id, Component)
	if apierrors.IsNotFound(err) {
		return nil, notFoundSnapshot(id)
	}
	if err != nil {
		return nil, apiError(err, "looking up snapshot %q", id)
	}
	sn, ok := s.asSnapshot(u)
	if !ok {
		return nil, notFoundSnapshot(id)
	}
	return sn, nil
}

// CreateSnapshot creates (or finds, for a retry) the VolumeSnapshot of the volume's claim and
// waits up to SnapshotReadyWait for it to be ready to use.
func (s *Server) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name, srcID := req.GetName(), req.GetSourceVolumeId()
	if err := validateName("name", name); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := validateID("source_volume_id", srcID); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot %q: %v", name, err)
	}
	class, err := parseSnapshotParams(req.GetParameters(), s.opts.Storage)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot %q: %v", name, err)
	}
	id := SnapshotID(s.scope.ClusterName, name)
	release, err := s.inflight.Acquire(id, "CreateSnapshot")
	if err != nil {
		return nil, err
	}
	defer release()
	logger := klog.FromContext(ctx).WithValues("snapshotID", id, "name", name, "sourceVolumeID", srcID)
	ctx = klog.NewContext(ctx, logger)

	for attempt := 0; ; attempt++ {
		existing := infra.NewVolumeSnapshot()
		err := s.infra.GetNamed(ctx, id, existing)
		if err == nil {
			sn, ok := s.asSnapshot(existing)
			switch {
			case !ok:
				return nil, status.Errorf(codes.AlreadyExists, "snapshot %q: VolumeSnapshot %s/%s exists but was not created for it by this cluster's csi-controller", name, s.scope.Namespace, id)
			case sn.sourceVolume != srcID:
				return nil, status.Errorf(codes.AlreadyExists, "snapshot %q exists for source volume %q, not %q", name, sn.sourceVolume, srcID)
			case sn.terminating():
				return nil, status.Errorf(codes.Aborted, "snapshot %q is being deleted; retry later", name)
			}
			break
		}
		if !apierrors.IsNotFound(err) {
			return nil, apiError(err, "snapshot %q: looking up VolumeSnapshot", name)
		}
		src, err := s.getVolume(ctx, srcID)
		if err != nil {
			return nil, err
		}
		if src.terminating() || !src.succeeded() {
			return nil, status.Errorf(codes.FailedPrecondition, "snapshot %q: source volume %q is not ready (%s)", name, srcID, describeDataVolume(src.dv))
		}
		vs := s.newVolumeSnapshot(id, name, class, src)
		if err := s.addClusterOwner(ctx, vs, "snapshot %q: owner reference for VolumeSnapshot %s/%s", name, s.scope.Namespace, id); err != nil {
			return nil, err
		}
		err = s.infra.CreateOwned(ctx, vs)
		if apierrors.IsAlreadyExists(err) && attempt == 0 {
			if err := s.waitSnapshotCached(ctx, id); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, apiError(err, "snapshot %q: creating VolumeSnapshot %s/%s", name, s.scope.Namespace, id)
		}
		logger.V(2).Info("Created VolumeSnapshot", "class", class)
		if err := s.waitSnapshotCached(ctx, id); err != nil {
			return nil, err
		}
		break
	}
	sn, err := s.waitSnapshotReady(ctx, id)
	if err != nil {
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: sn.csi()}, nil
}

func (s *Server) newVolumeSnapshot(id, name, class string, src *volume) *unstructured.Unstructured {
	u := infra.NewVolumeSnapshot()
	u.SetNamespace(s.scope.Namespace)
	u.SetName(id)
	u.SetLabels(s.scope.OwnedLabels(Component))
	ann := s.scope.OwnedAnnotations()
	ann[AnnSnapshotName] = name
	ann[AnnSourceVolume] = src.id
	ann[AnnCapacity] = strconv.FormatInt(src.capacity, 10)
	u.SetAnnotations(ann)
	claim := src.dv.Status.ClaimName
	if claim == "" {
		claim = src.id
	}
	u.Object["spec"] = map[string]any{
		"source":                  map[string]any{"persistentVolumeClaimName": claim},
		"volumeSnapshotClassName": class,
	}
	return u
}

func (s *Server) waitSnapshotCached(ctx context.Context, id string) error {
	// Ask the informer cache, which getSnapshot reads next: the client's reads of unstructured
	// objects (VolumeSnapshot has no Go type here) bypass the cache and go to the apiserver, so
	// a hit there says nothing about what the cache has seen yet.
	err := s.notify.wait(ctx, kindSnapshot, id, func() (bool, error) {
		_, err := s.infra.OwnedVolumeSnapshot(ctx, id, Component)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return waitError(err, fmt.Sprintf("snapshot %q: waiting for the VolumeSnapshot to be observed", id), "")
	}
	return nil
}

// waitSnapshotReady waits, on snapshot events, up to SnapshotReadyWait for readyToUse. Past that
// it answers with ready_to_use=false; the CO asks again.
func (s *Server) waitSnapshotReady(ctx context.Context, id string) (*snapshot, error) {
	wctx, cancel := context.WithTimeout(ctx, s.opts.SnapshotReadyWait)
	defer cancel()
	var sn *snapshot
	err := s.notify.wait(wctx, kindSnapshot, id, func() (bool, error) {
		cur, err := s.getSnapshot(ctx, id)
		if err != nil {
			return false, err
		}
		sn = cur
		return sn.ready, nil
	})
	switch {
	case err == nil:
		return sn, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && sn != nil:
		klog.FromContext(ctx).V(2).Info("Snapshot not ready yet", "error", sn.errMessage)
		return sn, nil
	}
	last := ""
	if sn != nil {
		last = sn.errMessage
	}
	return nil, waitError(err, fmt.Sprintf("snapshot %q: waiting for it to be ready", id), last)
}

// DeleteSnapshot deletes a snapshot's VolumeSnapshot. IDs that are not ours are already gone
// as far as the tenant can tell: OK, nothing touched.
func (s *Server) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if err := validateID("snapshot_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !IsSnapshotID(id) {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	release, err := s.inflight.Acquire(id, "DeleteSnapshot")
	if err != nil {
		return nil, err
	}
	defer release()
	sn, err := s.getSnapshot(ctx, id)
	if status.Code(err) == codes.NotFound {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if !sn.terminating() {
		if err := s.infra.DeleteOwned(ctx, sn.obj); err != nil {
			return nil, apiError(err, "snapshot %q: deleting VolumeSnapshot", id)
		}
		klog.FromContext(ctx).V(2).Info("Deleted VolumeSnapshot", "snapshotID", id)
	}
	// Read from the informer cache, which the notifier's events come from: the client would
	// send unstructured reads to the apiserver, a GET per event. A snapshot that is gone, going,
	// or replaced by another object (not ours, or another UID) is done.
	err = s.notify.wait(ctx, kindSnapshot, id, func() (bool, error) {
		u, err := s.infra.OwnedVolumeSnapshot(ctx, id, Component)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && (u.GetDeletionTimestamp() != nil || u.GetUID() != sn.obj.GetUID()), err
	})
	if err != nil {
		return nil, waitError(err, fmt.Sprintf("snapshot %q: waiting for deletion", id), "")
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// listSnapshots returns this tenant's snapshots (not terminating), sorted by ID.
func (s *Server) listSnapshots(ctx context.Context) ([]*snapshot, error) {
	if !snapshotsConfigured(s.opts.Storage) {
		return nil, nil
	}
	// From the informer cache (ListOwned), not the client, whose unstructured reads are live
	// LISTs: CreateSnapshot and DeleteSnapshot return only once the cache has seen their
	// change, so the cache is as fresh as the CO can observe.
	list := infra.NewVolumeSnapshotList()
	if err := s.infra.ListOwned(ctx, list, Component, nil); err != nil {
		return nil, apiError(err, "listing VolumeSnapshots")
	}
	var out []*snapshot
	for i := range list.Items {
		if sn, ok := s.asSnapshot(&list.Items[i]); ok && !sn.terminating() {
			out = append(out, sn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// ListSnapshots lists snapshots, optionally only one ID or one source volume, paginated.
func (s *Server) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	all, err := s.listSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*snapshot{}
	var ids []string
	for _, sn := range all {
		if req.GetSnapshotId() != "" && sn.id != req.GetSnapshotId() {
			continue
		}
		if req.GetSourceVolumeId() != "" && sn.sourceVolume != req.GetSourceVolumeId() {
			continue
		}
		byID[sn.id] = sn
		ids = append(ids, sn.id)
	}
	selected, next, err := page(ids, req.GetStartingToken(), req.GetMaxEntries(), IsSnapshotID)
	if errors.Is(err, errInvalidToken) {
		return nil, status.Errorf(codes.Aborted, "starting_token %q: %v", req.GetStartingToken(), err)
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rsp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, id := range selected {
		rsp.Entries = append(rsp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: byID[id].csi()})
	}
	return rsp, nil
}

// GetSnapshot returns one snapshot.
func (s *Server) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if err := validateID("snapshot_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	sn, err := s.getSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	return &csi.GetSnapshotResponse{Snapshot: sn.csi()}, nil
}
