package controller

import (
	"reflect"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func zones(zs ...string) []*csi.Topology {
	out := make([]*csi.Topology, 0, len(zs))
	for _, z := range zs {
		out = append(out, &csi.Topology{Segments: map[string]string{config.TopologyZoneKey: z}})
	}
	return out
}

var topoStorage = config.Storage{
	DefaultStorageClass:   "everywhere",
	AllowedStorageClasses: []string{"pinned-a", "stretched", "zonal", "zonal-b"},
	Topology: map[string]config.ClassTopology{
		"pinned-a":  {Zones: []string{"zone-a"}},
		"stretched": {Zones: []string{"zone-a", "zone-b"}},
		"zonal":     {ZoneStorageClasses: map[string]string{"zone-a": "zonal-a", "zone-b": "zonal-b", "zone-c": "zonal-c"}},
	},
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name      string
		class     string
		req       *csi.TopologyRequirement
		wantClass string
		wantZones []string
		wantCode  codes.Code
		wantMsg   string
	}{
		{name: "class reaching every zone ignores requirements", class: "everywhere",
			req: &csi.TopologyRequirement{Requisite: zones("zone-x")}, wantClass: "everywhere"},
		{name: "pinned class, requisite includes its zone", class: "pinned-a",
			req: &csi.TopologyRequirement{Requisite: zones("zone-b", "zone-a")}, wantClass: "pinned-a", wantZones: []string{"zone-a"}},
		{name: "pinned class, no requirements", class: "pinned-a", wantClass: "pinned-a", wantZones: []string{"zone-a"}},
		{name: "pinned class, requisite elsewhere", class: "pinned-a",
			req: &csi.TopologyRequirement{Requisite: zones("zone-b")}, wantCode: codes.ResourceExhausted, wantMsg: `reaches zones [zone-a] only, none of them in the requisite zones [zone-b]`},
		{name: "stretched class reports every zone it reaches", class: "stretched",
			req: &csi.TopologyRequirement{Requisite: zones("zone-b")}, wantClass: "stretched", wantZones: []string{"zone-a", "zone-b"}},
		{name: "zonal: first preferred wins (the pod's zone)", class: "zonal",
			req:       &csi.TopologyRequirement{Requisite: zones("zone-a", "zone-b", "zone-c"), Preferred: zones("zone-b", "zone-a", "zone-c")},
			wantClass: "zonal-b", wantZones: []string{"zone-b"}},
		{name: "zonal: preferred zone the class lacks is skipped", class: "zonal",
			req:       &csi.TopologyRequirement{Requisite: zones("zone-d", "zone-c"), Preferred: zones("zone-d", "zone-c")},
			wantClass: "zonal-c", wantZones: []string{"zone-c"}},
		{name: "zonal: preferred outside requisite is not taken", class: "zonal",
			req:       &csi.TopologyRequirement{Requisite: zones("zone-a"), Preferred: zones("zone-b")},
			wantClass: "zonal-a", wantZones: []string{"zone-a"}},
		{name: "zonal: requisite only", class: "zonal",
			req: &csi.TopologyRequirement{Requisite: zones("zone-c")}, wantClass: "zonal-c", wantZones: []string{"zone-c"}},
		{name: "zonal: no zone of the class is requisite", class: "zonal",
			req: &csi.TopologyRequirement{Requisite: zones("zone-d")}, wantCode: codes.ResourceExhausted, wantMsg: `places volumes in zones [zone-a zone-b zone-c], none of them in the requisite zones [zone-d]`},
		{name: "a zone's class named directly stays in its zone", class: "zonal-b",
			req: &csi.TopologyRequirement{Requisite: zones("zone-a")}, wantCode: codes.ResourceExhausted},
		{name: "foreign key", class: "zonal",
			req:      &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{"kubernetes.io/hostname": "infra-a"}}}},
			wantCode: codes.InvalidArgument, wantMsg: `accessibility_requirements.requisite[0]: segments must be exactly {topology.kubernetes.io/zone: <zone>}, got keys ["kubernetes.io/hostname"]`},
		{name: "zone key plus another key", class: "pinned-a",
			req:      &csi.TopologyRequirement{Preferred: []*csi.Topology{{Segments: map[string]string{config.TopologyZoneKey: "zone-a", "rack": "1"}}}},
			wantCode: codes.InvalidArgument, wantMsg: "accessibility_requirements.preferred[0]"},
		{name: "empty segments", class: "pinned-a",
			req: &csi.TopologyRequirement{Requisite: []*csi.Topology{{}}}, wantCode: codes.InvalidArgument},
		{name: "zone not a label value", class: "zonal",
			req: &csi.TopologyRequirement{Requisite: zones("../../zone-a")}, wantCode: codes.InvalidArgument, wantMsg: "is not a label value"},
		{name: "empty zone", class: "zonal",
			req: &csi.TopologyRequirement{Requisite: zones("")}, wantCode: codes.InvalidArgument},
		{name: "too many topologies", class: "zonal",
			req: &csi.TopologyRequirement{Requisite: zones(make([]string, maxTopologies+1)...)}, wantCode: codes.InvalidArgument, wantMsg: "more than 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := place(topoStorage, tt.class, "pvc-1", tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("place = %+v, %v; want code %s", got, err, tt.wantCode)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q does not contain %q", err, tt.wantMsg)
				}
				return
			}
			if got.storageClass != tt.wantClass || !reflect.DeepEqual(got.zones, tt.wantZones) {
				t.Errorf("place = %+v, want class %s zones %v", got, tt.wantClass, tt.wantZones)
			}
		})
	}
}

func TestPlaceWithoutTopology(t *testing.T) {
	// Topology off: not advertised, so whatever comes is ignored and nothing is confined.
	got, err := place(config.Storage{DefaultStorageClass: "x"}, "x", "n", &csi.TopologyRequirement{Requisite: zones("anything")})
	if err != nil || got.storageClass != "x" || got.zones != nil {
		t.Errorf("place = %+v, %v", got, err)
	}
}

func TestPickZoneSpreadsAndIsStable(t *testing.T) {
	seen := map[string]bool{}
	for _, name := range []string{"pvc-1", "pvc-2", "pvc-3", "pvc-4", "pvc-5", "pvc-6", "pvc-7", "pvc-8"} {
		p1, err1 := place(topoStorage, "zonal", name, nil)
		p2, err2 := place(topoStorage, "zonal", name, nil)
		if err1 != nil || err2 != nil || p1.storageClass != p2.storageClass {
			t.Fatalf("%s: %+v/%v then %+v/%v; a retry must place the volume alike", name, p1, err1, p2, err2)
		}
		seen[p1.zones[0]] = true
	}
	if len(seen) < 2 {
		t.Errorf("8 volumes without requirements all went to %v; want them spread", seen)
	}
}

func TestCheckAccessible(t *testing.T) {
	v := &volume{name: "pvc-1", zones: []string{"zone-a"}}
	if err := checkAccessible(v, topoStorage, &csi.TopologyRequirement{Requisite: zones("zone-a", "zone-b")}); err != nil {
		t.Errorf("reachable: %v", err)
	}
	if err := checkAccessible(v, topoStorage, &csi.TopologyRequirement{Requisite: zones("zone-b")}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("unreachable: %v, want AlreadyExists", err)
	}
	if err := checkAccessible(&volume{name: "x"}, topoStorage, &csi.TopologyRequirement{Requisite: zones("zone-b")}); err != nil {
		t.Errorf("volume reaching every zone: %v", err)
	}
}

func TestAccessibleTopology(t *testing.T) {
	if accessibleTopology(nil) != nil {
		t.Error("every zone must report no constraint")
	}
	got := accessibleTopology([]string{"zone-a", "zone-b"})
	if len(got) != 2 || got[1].GetSegments()[config.TopologyZoneKey] != "zone-b" || len(got[1].GetSegments()) != 1 {
		t.Errorf("accessibleTopology = %v", got)
	}
}
