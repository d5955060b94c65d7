package controller

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// volume is a DataVolume read as a CSI volume.
type volume struct {
	dv          *cdiv1.DataVolume
	id          string
	name        string
	capacity    int64
	bus         string
	serial      string // the disk serial the volume is hot-plugged with
	source      string // AnnContentSource
	accessModes []corev1.PersistentVolumeAccessMode
	volumeMode  corev1.PersistentVolumeMode
	// storageClass is the DataVolume's infra StorageClass; zones are the zones it reaches
	// (storage.topology; nil: every zone, or topology off).
	storageClass string
	zones        []string
}

// asVolume reads dv as a volume of this tenant's csi-controller, or reports false: the
// DataVolume must be owned by us (pkg/infra) and its name must be VolumeID of the CSI name it
// is annotated with, so neither a relabelled foreign DataVolume nor a renamed one passes.
func (s *Server) asVolume(dv *cdiv1.DataVolume) (*volume, bool) {
	v, ok := s.asNativeVolume(dv)
	if tccsi.IsLegacyVolumeID(dv.Name) {
		v, ok = s.asAdoptedVolume(dv)
	}
	if ok && s.opts.Storage.TopologyEnabled() {
		v.zones = s.opts.Storage.ClassZones(v.storageClass)
	}
	return v, ok
}

// asNativeVolume reads dv as a volume csi-controller created under its own volume ID.
func (s *Server) asNativeVolume(dv *cdiv1.DataVolume) (*volume, bool) {
	if !s.scope.OwnedBy(dv, Component) || !IsVolumeID(dv.Name) {
		return nil, false
	}
	name := dv.Annotations[AnnVolumeName]
	if name == "" || VolumeID(s.scope.ClusterName, name) != dv.Name {
		return nil, false
	}
	v := &volume{dv: dv, id: dv.Name, name: name, serial: tccsi.Serial(dv.Name), bus: dv.Annotations[AnnBus], source: dv.Annotations[AnnContentSource]}
	if v.bus != tccsi.BusVirtio {
		v.bus = tccsi.BusSCSI
	}
	v.readStorage()
	return v, true
}

// parseBytes reads a positive byte count annotation.
func parseBytes(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

func (v *volume) terminating() bool { return v.dv.DeletionTimestamp != nil }

func (v *volume) succeeded() bool { return v.dv.Status.Phase == cdiv1.Succeeded }

// csi is the volume as CSI reports it.
func (v *volume) csi() *csi.Volume {
	return &csi.Volume{VolumeId: v.id, CapacityBytes: v.capacity, ContentSource: contentSourceOf(v.source),
		AccessibleTopology: accessibleTopology(v.zones)}
}

func contentSourceOf(ann string) *csi.VolumeContentSource {
	kind, id, ok := strings.Cut(ann, "/")
	if !ok {
		return nil
	}
	switch kind {
	case "snapshot":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
	case "volume":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
	}
	return nil
}

// contentSourceAnnotation is the AnnContentSource value for a request's content source.
func contentSourceAnnotation(cs *csi.VolumeContentSource) string {
	switch {
	case cs.GetSnapshot() != nil:
		return "snapshot/" + cs.GetSnapshot().GetSnapshotId()
	case cs.GetVolume() != nil:
		return "volume/" + cs.GetVolume().GetVolumeId()
	}
	return ""
}

// notFoundVolume is the one answer for every volume ID that is not one of ours, whether it is
// missing, foreign or malformed: the tenant learns nothing about other objects.
func notFoundVolume(id string) error {
	return status.Errorf(codes.NotFound, "volume %q not found: no volume of this cluster has that ID", id)
}

// getVolume resolves a volume ID through the ownership-checked lookup.
func (s *Server) getVolume(ctx context.Context, id string) (*volume, error) {
	if !isVolumeHandle(id) {
		return nil, notFoundVolume(id)
	}
	dv, err := s.infra.OwnedDataVolume(ctx, id, Component)
	if apierrors.IsNotFound(err) {
		return nil, notFoundVolume(id)
	}
	if err != nil {
		return nil, apiError(err, "looking up volume %q", id)
	}
	v, ok := s.asVolume(dv)
	if !ok {
		return nil, notFoundVolume(id)
	}
	return v, nil
}

// listVolumes returns this tenant's volumes (not terminating), sorted by ID. With
// client.UnsafeDisableDeepCopy the volumes' DataVolumes share their contents with the cache
// and must only be read.
func (s *Server) listVolumes(ctx context.Context, opts ...client.ListOption) ([]*volume, error) {
	// Adopted DataVolumes carry the upstream driver's labels besides ours: ListOwned selects
	// on our labels only, and asVolume tells native and adopted volumes apart.
	var list cdiv1.DataVolumeList
	if err := s.infra.ListOwned(ctx, &list, Component, nil, opts...); err != nil {
		return nil, apiError(err, "listing DataVolumes")
	}
	var out []*volume
	for i := range list.Items {
		if v, ok := s.asVolume(&list.Items[i]); ok && !v.terminating() {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// currentUsage sums the tenant's volumes for the quotas, with the creations admitted but not
// cached yet.
func (s *Server) currentUsage(ctx context.Context) (usage, error) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	return s.currentUsageLocked(ctx)
}

// currentUsageLocked is currentUsage for a caller holding quotaMu.
func (s *Server) currentUsageLocked(ctx context.Context) (usage, error) {
	// Every CreateVolume sums all volumes: deep copies of a thousand cached DataVolumes per
	// call were ≈2 GB of garbage for a thousand creates, and the fragmented heap it left
	// held the controller's RSS up. Summing capacities only reads them.
	vols, err := s.listVolumes(ctx, client.UnsafeDisableDeepCopy)
	if err != nil {
		return usage{}, err
	}
	return sumUsage(vols, s.reserved), nil
}

// sumUsage adds up the volumes and the reservations (volume ID → bytes) of volumes not among
// them yet; a reservation whose volume is listed already counts once.
func sumUsage(vols []*volume, reserved map[string]int64) usage {
	var u usage
	listed := make(map[string]bool, len(vols))
	for _, v := range vols {
		u.volumes++
		u.bytes += v.capacity
		listed[v.id] = true
	}
	for id, bytes := range reserved {
		if !listed[id] {
			u.volumes++
			u.bytes += bytes
		}
	}
	return u
}

// hasVolume reports whether a VMI spec hot-plugs volume id (by volume name or source name).
func hasVolume(spec *kubevirtv1.VirtualMachineInstanceSpec, id string) bool {
	if spec == nil {
		return false
	}
	return slices.ContainsFunc(spec.Volumes, func(v kubevirtv1.Volume) bool {
		return v.Name == id ||
			(v.DataVolume != nil && v.DataVolume.Name == id) ||
			(v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == id)
	})
}

func vmHasVolume(vm *kubevirtv1.VirtualMachine, id string) bool {
	return vm.Spec.Template != nil && hasVolume(&vm.Spec.Template.Spec, id)
}

func volumeStatus(vmi *kubevirtv1.VirtualMachineInstance, id string) *kubevirtv1.VolumeStatus {
	for i := range vmi.Status.VolumeStatus {
		if vmi.Status.VolumeStatus[i].Name == id {
			return &vmi.Status.VolumeStatus[i]
		}
	}
	return nil
}

// attachments maps volume IDs to the names of this cluster's VMs (and VMIs) that hot-plug
// them, from the cache. The VM spec is the desired attachment; a VMI may still carry a volume
// the VM dropped (or a VMI-level hotplug), so both count.
func (s *Server) attachments(ctx context.Context) (map[string][]string, error) {
	var vms kubevirtv1.VirtualMachineList
	if err := s.infra.ListInCluster(ctx, &vms); err != nil {
		return nil, apiError(err, "listing VMs")
	}
	var vmis kubevirtv1.VirtualMachineInstanceList
	if err := s.infra.ListInCluster(ctx, &vmis); err != nil {
		return nil, apiError(err, "listing VMIs")
	}
	out := map[string][]string{}
	add := func(id, vm string) {
		if isVolumeHandle(id) && !slices.Contains(out[id], vm) {
			out[id] = append(out[id], vm)
		}
	}
	for i := range vms.Items {
		vm := &vms.Items[i]
		if vm.Spec.Template == nil {
			continue
		}
		for _, v := range vm.Spec.Template.Spec.Volumes {
			add(v.Name, vm.Name)
		}
	}
	for i := range vmis.Items {
		vmi := &vmis.Items[i]
		for _, v := range vmi.Spec.Volumes {
			add(v.Name, vmi.Name)
		}
		for _, st := range vmi.Status.VolumeStatus {
			add(st.Name, vmi.Name)
		}
	}
	for id := range out {
		sort.Strings(out[id])
	}
	return out, nil
}

// describeDataVolume summarises where a DataVolume stands, for wait errors.
func describeDataVolume(dv *cdiv1.DataVolume) string {
	if dv == nil {
		return "DataVolume not created yet"
	}
	parts := []string{fmt.Sprintf("phase %q", dv.Status.Phase)}
	for _, c := range dv.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			parts = append(parts, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
		}
	}
	if dv.Status.RestartCount > 0 {
		parts = append(parts, fmt.Sprintf("%d restarts", dv.Status.RestartCount))
	}
	return strings.Join(parts, "; ")
}
