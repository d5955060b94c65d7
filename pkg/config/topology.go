package config

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// TopologyZoneKey is the one topology key of volume topology: the well-known zone label the
// ccm copies onto each tenant Node from the infra Node running its VM (ccm --node-zones), which
// csi-node reports in NodeGetInfo and csi-controller matches volumes against.
const TopologyZoneKey = "topology.kubernetes.io/zone"

// ClassTopology says where the volumes of one granted infra StorageClass are reachable. Exactly
// one of its fields is set.
type ClassTopology struct {
	// Zones lists the zones every volume of the class is reachable from (a class pinned to
	// one zone, or one replicating across several).
	Zones []string `json:"zones,omitempty"`
	// ZoneStorageClasses makes the class zonal: each volume lives in one zone, picked at
	// creation from the tenant's accessibility requirements (the pod's zone for a
	// WaitForFirstConsumer StorageClass), and its DataVolume uses the infra StorageClass given
	// for that zone (zone → infra StorageClass, e.g. a LINSTOR class whose allowedTopologies or
	// replicasOnSame pin that zone). Each such class may appear once.
	ZoneStorageClasses map[string]string `json:"zoneStorageClasses,omitempty"`
}

// TopologyEnabled reports whether volume topology is on: the operator said where at least one
// class's volumes are reachable.
func (s Storage) TopologyEnabled() bool { return len(s.Topology) > 0 }

// ClassZones returns the zones the volumes of infra StorageClass class reach, sorted; nil means
// every zone (a class the topology does not mention). A class named as one zone's class of a
// zonal entry reaches that zone.
func (s Storage) ClassZones(class string) []string {
	if t, ok := s.Topology[class]; ok {
		if len(t.Zones) > 0 {
			z := slices.Clone(t.Zones)
			sort.Strings(z)
			return slices.Compact(z)
		}
		return sortedKeys(t.ZoneStorageClasses)
	}
	for _, t := range s.Topology {
		for zone, zc := range t.ZoneStorageClasses {
			if zc == class {
				return []string{zone}
			}
		}
	}
	return nil
}

// Zones returns every zone the topology names, sorted: the zones the tenant's volumes may be
// placed in.
func (s Storage) Zones() []string {
	all := sets.New[string]()
	for _, t := range s.Topology {
		all.Insert(t.Zones...)
		all.Insert(sortedKeys(t.ZoneStorageClasses)...)
	}
	return sets.List(all)
}

// sortedKeys returns m's keys sorted; empty, never nil, for an empty map (nil would mean
// "every zone" to ClassZones).
func sortedKeys(m map[string]string) []string {
	if keys := slices.Sorted(maps.Keys(m)); keys != nil {
		return keys
	}
	return []string{}
}

// validateTopology checks storage.topology: keys are granted classes, each entry sets exactly
// one of zones and zoneStorageClasses, zones are label values, and no per-zone class is named
// twice or also has an entry of its own (its zone would be ambiguous).
func (s *Storage) validateTopology(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	classes := make([]string, 0, len(s.Topology))
	for c := range s.Topology {
		classes = append(classes, c)
	}
	sort.Strings(classes) // stable error order
	zoneClassOwner := map[string]string{}
	for _, c := range classes {
		t := s.Topology[c]
		cp := p.Key(c)
		errs = append(errs, validateSubdomain(c, cp)...)
		if !s.StorageClassAllowed(c) {
			errs = append(errs, field.Invalid(cp, c, "must be a granted infra StorageClass (storage.defaultStorageClass or storage.allowedStorageClasses)"))
		}
		switch {
		case len(t.Zones) == 0 && len(t.ZoneStorageClasses) == 0:
			errs = append(errs, field.Required(cp, "one of zones or zoneStorageClasses"))
		case len(t.Zones) > 0 && len(t.ZoneStorageClasses) > 0:
			errs = append(errs, field.Forbidden(cp.Child("zoneStorageClasses"), "zones and zoneStorageClasses are exclusive"))
		}
		seen := sets.New[string]()
		for i, z := range t.Zones {
			if seen.Has(z) {
				errs = append(errs, field.Duplicate(cp.Child("zones").Index(i), z))
				continue
			}
			seen.Insert(z)
			errs = append(errs, validateZone(z, cp.Child("zones").Index(i))...)
		}
		for _, z := range sortedKeys(t.ZoneStorageClasses) {
			zc := t.ZoneStorageClasses[z]
			zp := cp.Child("zoneStorageClasses").Key(z)
			errs = append(errs, validateZone(z, zp)...)
			errs = append(errs, validateSubdomain(zc, zp)...)
			if owner, dup := zoneClassOwner[zc]; dup {
				errs = append(errs, field.Duplicate(zp, fmt.Sprintf("%s (also under %s)", zc, owner)))
				continue
			}
			zoneClassOwner[zc] = fmt.Sprintf("%s[%s]", c, z)
			if _, own := s.Topology[zc]; own {
				errs = append(errs, field.Invalid(zp, zc, "has a topology entry of its own; a zone's class must not (its volumes' zone would be ambiguous)"))
			}
		}
	}
	return errs
}

func validateZone(z string, p *field.Path) field.ErrorList {
	return validateRequired(z, p, "a zone (topology.kubernetes.io/zone value)", validation.IsValidLabelValue)
}
