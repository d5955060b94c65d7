package config

import (
	"encoding/json"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzParse feeds arbitrary bytes to the config parser every program runs at start-up. A
// config that parses must be one Validate accepts, must survive a marshal/parse round trip
// unchanged (so --check-config and the programs read the same thing), and must never grant
// more than it says: names are DNS labels, quotas are not negative, the default pool is one
// the tenant may use.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"clusterName: a\ninfraNamespace: b\nstorage: {defaultStorageClass: x}\n",
		`{"clusterName":"a","infraNamespace":"b","storage":{"defaultStorageClass":"x","maxTotalCapacity":"0.5"}}`,
		"clusterName: a\ninfraNamespace: b\nstorage: {defaultStorageClass: x, maxTotalCapacity: \"-1\"}\n",
		"clusterName: a\ninfraNamespace: b\nstorage: {defaultStorageClass: x, maxTotalCapacity: 9223372036854775808}\n",
		"clusterName: a\nclusterName: b\n",
		"clusterName: A\ninfraNamespace: b\nstorage: {defaultStorageClass: x}\n",
		"clusterName: a\ninfraNamespace: ../b\nstorage: {defaultStorageClass: x}\n",
		"clusterName: a\ninfraNamespace: b\nloadBalancer: {allowedPools: [p], defaultPool: q}\nstorage: {defaultStorageClass: x}\n",
		"clusterName: a\ninfraNamespace: b\nloadBalancer: {allowedIPRanges: [\"10.0.0.5/24\", \"::ffff:1.2.3.4/128\"]}\nstorage: {defaultStorageClass: x}\n",
		"clusterName: a\ninfraNamespace: b\nloadBalancer: {maxServices: -1}\nstorage: {defaultStorageClass: x, diskBus: ide}\n",
		"clusterName: a\ninfraNamespace: b\nstorage: {defaultStorageClass: x}\nautoscaling: {nodeGroupSelector: {cluster.x-k8s.io/cluster-name: c}}\n",
		"clusterName: a\ninfraNamespace: b\nstorage: {defaultStorageClass: x, topology: {x: {zoneStorageClasses: {z1: x1, z2: x1}}}}\n",
		"clusterName: a\ninfraNamespace: b\nstorage: {defaultStorageClass: x}\nunknown: 1\n",
		"&a [*a]",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse returned a config with error %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		for field, v := range map[string]string{"clusterName": cfg.ClusterName, "infraNamespace": cfg.InfraNamespace} {
			if msgs := validation.IsDNS1123Label(v); len(msgs) > 0 {
				t.Fatalf("%s %q accepted: %v", field, v, msgs)
			}
		}
		if cfg.LoadBalancer.MaxServices < 0 || cfg.Storage.MaxVolumes < 0 || cfg.Storage.MaxTotalBytes() < 0 {
			t.Fatalf("negative quota accepted: %+v", cfg)
		}
		if lb := cfg.LoadBalancer; lb.DefaultPool != "" && len(lb.AllowedPools) > 0 && !slices.Contains(lb.AllowedPools, lb.DefaultPool) {
			t.Fatalf("default pool %q outside allowed %v", lb.DefaultPool, lb.AllowedPools)
		}
		for _, r := range cfg.LoadBalancer.AllowedIPRanges {
			if _, err := ParseIPRange(r); err != nil {
				t.Fatalf("allowed range %q accepted but does not parse: %v", r, err)
			}
		}
		// Round trip: what the programs would print back parses to the same config.
		js, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(js)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", js, err)
		}
		if !reflect.DeepEqual(normalise(cfg), normalise(again)) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", cfg, again)
		}
	})
}

// normalise maps empty collections to nil: JSON's omitempty drops them, which changes no
// meaning.
func normalise(c *Config) Config {
	out := *c
	if len(out.LoadBalancer.AllowedPools) == 0 {
		out.LoadBalancer.AllowedPools = nil
	}
	if len(out.LoadBalancer.AllowedIPRanges) == 0 {
		out.LoadBalancer.AllowedIPRanges = nil
	}
	if len(out.Storage.AllowedStorageClasses) == 0 {
		out.Storage.AllowedStorageClasses = nil
	}
	if len(out.Storage.AllowedSnapshotClasses) == 0 {
		out.Storage.AllowedSnapshotClasses = nil
	}
	if len(out.Autoscaling.NodeGroupSelector) == 0 {
		out.Autoscaling.NodeGroupSelector = nil
	}
	return out
}

// FuzzIPRange: a range that parses is ordered, of one family, contains both ends, never an
// address of the other family, and prints back to itself. Addresses outside it are refused by
// IPAllowed when it is the only grant.
func FuzzIPRange(f *testing.F) {
	for _, seed := range []struct{ rng, addr string }{
		{"192.0.2.0/28", "192.0.2.15"}, {"192.0.2.0/28", "192.0.2.16"}, {"10.0.0.10-10.0.0.20", "10.0.0.9"},
		{"2001:db8::/120", "2001:db8::ff"}, {"0.0.0.0/0", "::1"}, {"::/0", "1.2.3.4"},
		{"10.0.0.5/24", "10.0.0.5"}, {"::ffff:1.2.3.4/128", "1.2.3.4"}, {"1.2.3.4-::1", "1.2.3.4"},
		{"10.0.0.20-10.0.0.10", "10.0.0.15"}, {"fe80::1%eth0-fe80::2", "fe80::1"}, {" 10.0.0.1 - 10.0.0.1 ", "10.0.0.1"},
		{"255.255.255.255/32", "255.255.255.255"}, {"1.2.3.4-1.2.3.5-1.2.3.6", "1.2.3.5"},
	} {
		f.Add(seed.rng, seed.addr)
	}
	f.Fuzz(func(t *testing.T, s, addr string) {
		r, err := ParseIPRange(s)
		if err != nil {
			if r != (IPRange{}) {
				t.Fatalf("refused range %q yielded %v", s, r)
			}
			return
		}
		if !r.First.IsValid() || !r.Last.IsValid() || r.First.Is4() != r.Last.Is4() || r.Last.Less(r.First) {
			t.Fatalf("range %q parsed to %v", s, r)
		}
		if r.First.Zone() != "" || r.Last.Zone() != "" || r.First.Is4In6() || r.Last.Is4In6() {
			t.Fatalf("range %q parsed to zoned or mapped ends %v", s, r)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("range %v does not contain its ends", r)
		}
		back, err := ParseIPRange(r.String())
		if err != nil || back != r {
			t.Fatalf("range %v prints as %q which parses to %v, %v", r, r.String(), back, err)
		}
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return
		}
		in := r.Contains(a)
		if in && (a.Is4() != r.First.Is4() || a.Less(r.First) || r.Last.Less(a) || a.Zone() != "") {
			t.Fatalf("%v contains %s", r, a)
		}
		lb := LoadBalancer{AllowedIPRanges: []string{s}}
		if lb.IPAllowed(a) && !in && !r.Contains(a.Unmap()) {
			t.Fatalf("IPAllowed(%s) with only %q granted", a, s)
		}
	})
}
