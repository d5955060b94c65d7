package controller

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

// Volume topology (storage.topology in the config). The one topology key is the zone label
// (config.TopologyZoneKey) the ccm puts on each tenant Node from the infra Node running its VM
// and csi-node reports in NodeGetInfo. Where a volume lands is decided by its infra
// StorageClass alone: a class the operator pinned or replicated to some zones, or a zonal class
// whose volumes each use the infra class of the zone picked here. That is how a LINSTOR
// operator confines volumes to zones anyway (a StorageClass per zone whose allowedTopologies or
// replicasOnSame name the zone), it needs nothing LINSTOR-specific from csi-controller, and the
// zones of every volume follow from its DataVolume's class, so nothing new is stored and old
// volumes are read the same way. The tenant's segments are untrusted: only the zone key is
// accepted, values must be label values, and a volume is only ever placed in a zone the
// operator configured.

// maxTopologies bounds the requisite and preferred lists a request may carry (the provisioner
// sends one entry per zone of the tenant's nodes).
const maxTopologies = 256

// placement is where a new volume goes: the infra StorageClass of its DataVolume and the zones
// it is reachable from (nil: every zone).
type placement struct {
	storageClass string
	zones        []string
}

// requirements are a request's accessibility requirements as zones, in the request's order.
type requirements struct {
	requisite, preferred []string
}

// parseRequirements validates the tenant's accessibility requirements: every segment must be
// exactly {zone key: label value}.
func parseRequirements(r *csi.TopologyRequirement) (requirements, error) {
	var out requirements
	if len(r.GetRequisite())+len(r.GetPreferred()) > maxTopologies {
		return out, fmt.Errorf("accessibility_requirements: more than %d topologies", maxTopologies)
	}
	parse := func(field string, ts []*csi.Topology) ([]string, error) {
		var zones []string
		for i, t := range ts {
			zone, err := zoneOf(t.GetSegments())
			if err != nil {
				return nil, fmt.Errorf("accessibility_requirements.%s[%d]: %w", field, i, err)
			}
			if !slices.Contains(zones, zone) {
				zones = append(zones, zone)
			}
		}
		return zones, nil
	}
	var err error
	if out.requisite, err = parse("requisite", r.GetRequisite()); err != nil {
		return out, err
	}
	out.preferred, err = parse("preferred", r.GetPreferred())
	return out, err
}

// zoneOf reads a topology segment map that must hold the zone key and nothing else.
func zoneOf(segments map[string]string) (string, error) {
	zone, ok := segments[config.TopologyZoneKey]
	if !ok || len(segments) != 1 {
		keys := make([]string, 0, len(segments))
		for k := range segments {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if len(keys) > 8 {
			keys = append(keys[:8], "…")
		}
		return "", fmt.Errorf("segments must be exactly {%s: <zone>}, got keys %q", config.TopologyZoneKey, keys)
	}
	if msgs := validation.IsValidLabelValue(zone); zone == "" || len(msgs) > 0 {
		return "", fmt.Errorf("zone %.64q is not a label value", zone)
	}
	return zone, nil
}

// place decides the infra StorageClass and zones of a new volume of infra class class (already
// checked against the grant) named name. A class that cannot reach any requisite zone is
// RESOURCE_EXHAUSTED (CSI: the requirements are valid but cannot be met here); malformed
// requirements are INVALID_ARGUMENT.
func place(storage config.Storage, class, name string, r *csi.TopologyRequirement) (placement, error) {
	if !storage.TopologyEnabled() {
		// Topology is not advertised, so the CO sends none; requirements that come anyway
		// cannot be honoured or refused meaningfully and are ignored, as before topology.
		return placement{storageClass: class}, nil
	}
	req, err := parseRequirements(r)
	if err != nil {
		return placement{}, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	if t, ok := storage.Topology[class]; ok && len(t.ZoneStorageClasses) > 0 {
		candidates := storage.ClassZones(class)
		zone, ok := pickZone(candidates, req, name)
		if !ok {
			return placement{}, status.Errorf(codes.ResourceExhausted,
				"volume %q: infra StorageClass %q places volumes in zones %v, none of them in the requisite zones %v", name, class, candidates, req.requisite)
		}
		return placement{storageClass: t.ZoneStorageClasses[zone], zones: []string{zone}}, nil
	}
	zones := storage.ClassZones(class)
	if zones != nil && len(req.requisite) > 0 && !intersects(zones, req.requisite) {
		return placement{}, status.Errorf(codes.ResourceExhausted,
			"volume %q: infra StorageClass %q reaches zones %v only, none of them in the requisite zones %v", name, class, zones, req.requisite)
	}
	return placement{storageClass: class, zones: zones}, nil
}

// pickZone picks the zone of a zonal volume among candidates: the first preferred zone that is
// a candidate (and requisite, when requisites are given), else a requisite candidate chosen by
// the volume name's hash, so volumes without preferences spread across zones and a retried
// CreateVolume picks the same zone.
func pickZone(candidates []string, req requirements, name string) (string, bool) {
	allowed := candidates
	if len(req.requisite) > 0 {
		allowed = nil
		for _, z := range candidates {
			if slices.Contains(req.requisite, z) {
				allowed = append(allowed, z)
			}
		}
	}
	for _, z := range req.preferred {
		if slices.Contains(allowed, z) {
			return z, true
		}
	}
	if len(allowed) == 0 {
		return "", false
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return allowed[h.Sum32()%uint32(len(allowed))], true
}

func intersects(a, b []string) bool {
	return slices.ContainsFunc(a, func(z string) bool { return slices.Contains(b, z) })
}

// accessibleTopology is what CSI reports for a volume reaching zones (nil: every zone, so no
// constraint).
func accessibleTopology(zones []string) []*csi.Topology {
	if zones == nil {
		return nil
	}
	out := make([]*csi.Topology, 0, len(zones))
	for _, z := range zones {
		out = append(out, &csi.Topology{Segments: map[string]string{config.TopologyZoneKey: z}})
	}
	return out
}

// checkAccessible is for a retried CreateVolume: the existing volume must be reachable from a
// requisite zone, or it is not the volume asked for (ALREADY_EXISTS, as CSI says for
// incompatible accessibility_requirements).
func checkAccessible(v *volume, storage config.Storage, r *csi.TopologyRequirement) error {
	if !storage.TopologyEnabled() || v.zones == nil {
		return nil
	}
	req, err := parseRequirements(r)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "volume %q: %v", v.name, err)
	}
	if len(req.requisite) > 0 && !intersects(v.zones, req.requisite) {
		return status.Errorf(codes.AlreadyExists, "volume %q exists in zones %v, none of them in the requisite zones %v", v.name, v.zones, req.requisite)
	}
	return nil
}

// vmZone is the zone of the infra Node running VM vmName's instance, read live through the
// node topology reader; the node name comes from the VMI status, which the infra cluster
// writes, never from the tenant.
func (s *Server) vmZone(ctx context.Context, vmName string) (string, error) {
	vmi, err := s.infra.VMI(ctx, vmName)
	if apierrors.IsNotFound(err) {
		return "", status.Errorf(codes.Unavailable, "VM %s has no running instance, so its zone is not known yet; retry once it runs", vmName)
	}
	if err != nil {
		return "", apiError(err, "looking up VMI %q", vmName)
	}
	if vmi.Status.NodeName == "" || vmi.Status.Phase != kubevirtv1.Running {
		return "", status.Errorf(codes.Unavailable, "VM %s is not running on an infra node yet (phase %q), so its zone is not known; retry once it runs", vmName, vmi.Status.Phase)
	}
	zone, _, err := s.nodes.ZoneRegion(ctx, vmi.Status.NodeName)
	if err != nil {
		return "", apiError(err, "zone of VM %s (infra node %s)", vmName, vmi.Status.NodeName)
	}
	return zone, nil
}

// checkReachable refuses to hot-plug a zone-bound volume into a VM running in another zone
// (FAILED_PRECONDITION: the disk could not be attached there; the CO must use a node in one
// of the volume's zones).
func (s *Server) checkReachable(ctx context.Context, v *volume, vmName string) error {
	if v.zones == nil || s.nodes == nil {
		return nil
	}
	zone, err := s.vmZone(ctx, vmName)
	if err != nil {
		return err
	}
	if !slices.Contains(v.zones, zone) {
		where := fmt.Sprintf("zone %q", zone)
		if zone == "" {
			where = "an infra node without a zone label"
		}
		return status.Errorf(codes.FailedPrecondition, "volume %q is reachable from zones %v only; VM %s runs in %s", v.id, v.zones, vmName, where)
	}
	return nil
}
