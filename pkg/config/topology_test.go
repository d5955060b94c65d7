package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestTopologyBad(t *testing.T) {
	base := "clusterName: c\ninfraNamespace: ns\nstorage:\n  defaultStorageClass: fast\n  allowedStorageClasses: [zonal, slow]\n  topology:\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"class not granted", "    other: {zones: [a]}\n", []string{`storage.topology[other]: Invalid value: "other": must be a granted infra StorageClass`}},
		{"neither field", "    fast: {}\n", []string{`storage.topology[fast]: Required value: one of zones or zoneStorageClasses`}},
		{"both fields", "    fast: {zones: [a], zoneStorageClasses: {a: fast-a}}\n", []string{`storage.topology[fast].zoneStorageClasses: Forbidden: zones and zoneStorageClasses are exclusive`}},
		{"bad zone", "    fast: {zones: [\"zone a\"]}\n", []string{`storage.topology[fast].zones[0]: Invalid value: "zone a"`}},
		{"empty zone", "    fast: {zones: [\"\"]}\n", []string{`storage.topology[fast].zones[0]: Required value`}},
		{"duplicate zone", "    fast: {zones: [a, a]}\n", []string{`storage.topology[fast].zones[1]: Duplicate value: "a"`}},
		{"bad zone key", "    zonal: {zoneStorageClasses: {\"a/b\": zonal-a}}\n", []string{`storage.topology[zonal].zoneStorageClasses[a/b]: Invalid value: "a/b"`}},
		{"bad zone class", "    zonal: {zoneStorageClasses: {a: Zonal_A}}\n", []string{`storage.topology[zonal].zoneStorageClasses[a]: Invalid value: "Zonal_A"`}},
		{"zone class twice", "    zonal: {zoneStorageClasses: {a: x, b: x}}\n", []string{`storage.topology[zonal].zoneStorageClasses[b]: Duplicate value: "x (also under zonal[a])"`}},
		{"zone class with its own entry", "    zonal: {zoneStorageClasses: {a: slow}}\n    slow: {zones: [b]}\n", []string{`storage.topology[zonal].zoneStorageClasses[a]: Invalid value: "slow": has a topology entry of its own`}},
		{"zone class is the entry", "    zonal: {zoneStorageClasses: {a: zonal}}\n", []string{`storage.topology[zonal].zoneStorageClasses[a]: Invalid value: "zonal": has a topology entry of its own`}},
		{"zones not a list", "    fast: {zones: a}\n", []string{"storage.topology.zones of type []string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(base + tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q; got %+v", tt.want, cfg.Storage.Topology)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestClassZones(t *testing.T) {
	s := Storage{
		DefaultStorageClass:   "fast",
		AllowedStorageClasses: []string{"zonal", "zonal-b", "stretched"},
		Topology: map[string]ClassTopology{
			"stretched": {Zones: []string{"zone-b", "zone-a"}},
			"zonal":     {ZoneStorageClasses: map[string]string{"zone-b": "zonal-b", "zone-a": "zonal-a"}},
		},
	}
	for class, want := range map[string][]string{
		"stretched": {"zone-a", "zone-b"},
		"zonal":     {"zone-a", "zone-b"},
		"zonal-a":   {"zone-a"}, // a zone's class, named through the zonal entry
		"zonal-b":   {"zone-b"}, // also granted directly: still only its zone
		"fast":      nil,        // not listed: every zone
		"":          nil,
	} {
		if got := s.ClassZones(class); !reflect.DeepEqual(got, want) {
			t.Errorf("ClassZones(%q) = %v, want %v", class, got, want)
		}
	}
	if got, want := s.Zones(), []string{"zone-a", "zone-b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Zones() = %v, want %v", got, want)
	}
	if !s.TopologyEnabled() || (Storage{}).TopologyEnabled() {
		t.Error("TopologyEnabled: want true with entries, false without")
	}
}

func TestLoadExampleTopology(t *testing.T) {
	cfg, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Storage.ClassZones("linstor-fast-zone-b"); !reflect.DeepEqual(got, []string{"zone-b"}) {
		t.Errorf("example: linstor-fast-zone-b reaches %v, want [zone-b]", got)
	}
}
