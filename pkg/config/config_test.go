package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const minimal = `
clusterName: tenant-a
infraNamespace: tenant-a-ns
storage:
  defaultStorageClass: fast
`

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want Config
	}{
		{
			name: "minimal gets defaults",
			yaml: minimal,
			want: Config{
				ClusterName:    "tenant-a",
				InfraNamespace: "tenant-a-ns",
				Storage: Storage{
					DefaultStorageClass: "fast",
					DiskBus:             DiskBusSCSI,
					VolumeMode:          VolumeModeBlock,
					Hotplug:             HotplugSubresource,
				},
			},
		},
		{
			name: "defaultPool defaults to first allowed pool",
			yaml: minimal + `
loadBalancer:
  allowedPools: [pool-b, pool-a]
`,
			want: Config{
				ClusterName:    "tenant-a",
				InfraNamespace: "tenant-a-ns",
				LoadBalancer: LoadBalancer{
					AllowedPools: []string{"pool-b", "pool-a"},
					DefaultPool:  "pool-b",
				},
				Storage: Storage{
					DefaultStorageClass: "fast",
					DiskBus:             DiskBusSCSI,
					VolumeMode:          VolumeModeBlock,
					Hotplug:             HotplugSubresource,
				},
			},
		},
		{
			name: "full",
			yaml: `
clusterName: c1
infraNamespace: ns1
infraKubeconfig: /infra/kubeconfig
tenantKubeconfig: /tenant/kubeconfig
loadBalancer:
  allowedPools: [a, b.example]
  defaultPool: b.example
  allowedIPRanges: ["10.0.0.0/24", "10.1.0.1 - 10.1.0.9", "fd00::/64"]
  maxServices: 3
storage:
  allowedStorageClasses: [slow]
  defaultStorageClass: fast
  allowedSnapshotClasses: [snap-b]
  defaultSnapshotClass: snap-a
  maxVolumes: 7
  maxTotalCapacity: 1Gi
  diskBus: virtio
  volumeMode: Filesystem
  hotplug: declarative
autoscaling:
  nodeGroupSelector:
    example.com/pool: gpu
    tier: ""
`,
			want: Config{
				ClusterName:      "c1",
				InfraNamespace:   "ns1",
				InfraKubeconfig:  "/infra/kubeconfig",
				TenantKubeconfig: "/tenant/kubeconfig",
				LoadBalancer: LoadBalancer{
					AllowedPools:    []string{"a", "b.example"},
					DefaultPool:     "b.example",
					AllowedIPRanges: []string{"10.0.0.0/24", "10.1.0.1 - 10.1.0.9", "fd00::/64"},
					MaxServices:     3,
				},
				Storage: Storage{
					AllowedStorageClasses:  []string{"slow"},
					DefaultStorageClass:    "fast",
					AllowedSnapshotClasses: []string{"snap-b"},
					DefaultSnapshotClass:   "snap-a",
					MaxVolumes:             7,
					MaxTotalCapacity:       "1Gi",
					DiskBus:                DiskBusVirtio,
					VolumeMode:             VolumeModeFilesystem,
					Hotplug:                HotplugDeclarative,
				},
				Autoscaling: Autoscaling{NodeGroupSelector: map[string]string{
					"example.com/pool": "gpu",
					"tier":             "",
				}},
			},
		},
		{
			name: "JSON is YAML too",
			yaml: `{"clusterName":"c","infraNamespace":"n","storage":{"defaultStorageClass":"s","maxTotalCapacity":"0"}}`,
			want: Config{
				ClusterName:    "c",
				InfraNamespace: "n",
				Storage: Storage{
					DefaultStorageClass: "s",
					MaxTotalCapacity:    "0",
					DiskBus:             DiskBusSCSI,
					VolumeMode:          VolumeModeBlock,
					Hotplug:             HotplugSubresource,
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	// withStorage returns a config that is valid except for the given storage lines.
	withStorage := func(lines string) string {
		return "clusterName: c\ninfraNamespace: ns\nstorage:\n  defaultStorageClass: fast\n" + lines
	}
	withLB := func(lines string) string {
		return minimal + "loadBalancer:\n" + lines
	}
	tests := []struct {
		name string
		yaml string
		want []string // substrings the error must contain; the first names the field
	}{
		{"unknown top-level field", minimal + "clustername: x\n", []string{`unknown field "clustername"`}},
		{"unknown nested field", withStorage("  diskbus: scsi\n"), []string{`unknown field "storage.diskbus"`}},
		{"unknown deeply nested field", minimal + "autoscaling:\n  selector: {}\n", []string{`unknown field "autoscaling.selector"`}},
		{"duplicate field", minimal + "clusterName: other\n", []string{`"clusterName" already set`}},
		{"bad YAML", "clusterName: [unclosed\n", []string{"parsing YAML"}},
		{"wrong type", withStorage("  maxVolumes: lots\n"), []string{"storage.maxVolumes"}},
		{"top level is a list", "- a\n", []string{"decoding"}},
		{"empty file", "", []string{"clusterName: Required value", "infraNamespace: Required value"}},
		{"missing clusterName", "infraNamespace: ns\nstorage: {defaultStorageClass: s}\n", []string{"clusterName: Required value"}},
		{"clusterName not a label", "clusterName: Tenant_A\ninfraNamespace: ns\nstorage: {defaultStorageClass: s}\n", []string{`clusterName: Invalid value: "Tenant_A"`}},
		{"bad namespace", "clusterName: c\ninfraNamespace: a.b\nstorage: {defaultStorageClass: s}\n", []string{`infraNamespace: Invalid value: "a.b"`}},
		{"defaultPool not allowed", withLB("  allowedPools: [a]\n  defaultPool: x\n"), []string{`loadBalancer.defaultPool: Invalid value: "x": must be one of loadBalancer.allowedPools`}},
		{"bad pool name", withLB("  allowedPools: [Bad_Pool]\n"), []string{`loadBalancer.allowedPools[0]: Invalid value: "Bad_Pool"`}},
		{"duplicate pool", withLB("  allowedPools: [a, b, a]\n"), []string{`loadBalancer.allowedPools[2]: Duplicate value: "a"`}},
		{"bad CIDR", withLB("  allowedIPRanges: [10.0.0.0/33]\n"), []string{`loadBalancer.allowedIPRanges[0]: Invalid value: "10.0.0.0/33"`}},
		{"CIDR with host bits", withLB("  allowedIPRanges: [10.0.0.5/24]\n"), []string{"loadBalancer.allowedIPRanges[0]", "10.0.0.0/24"}},
		{"range start after end", withLB("  allowedIPRanges: [10.0.0.0/24, 10.0.0.9-10.0.0.1]\n"), []string{"loadBalancer.allowedIPRanges[1]", "is after end"}},
		{"range mixes families", withLB("  allowedIPRanges: [10.0.0.1-fd00::1]\n"), []string{"loadBalancer.allowedIPRanges[0]", "mixes IPv4 and IPv6"}},
		{"negative maxServices", withLB("  maxServices: -1\n"), []string{`loadBalancer.maxServices: Invalid value: -1`}},
		{"negative maxVolumes", withStorage("  maxVolumes: -2\n"), []string{`storage.maxVolumes: Invalid value: -2`}},
		{"negative capacity", withStorage("  maxTotalCapacity: -1Gi\n"), []string{`storage.maxTotalCapacity: Invalid value: "-1Gi": must not be negative`}},
		{"bad quantity", withStorage("  maxTotalCapacity: 10TB\n"), []string{`storage.maxTotalCapacity: Invalid value: "10TB"`}},
		{"huge quantity", withStorage("  maxTotalCapacity: \"1E30\"\n"), []string{`storage.maxTotalCapacity: Invalid value: "1E30"`, "64-bit"}},
		{"unquoted number quantity", withStorage("  maxTotalCapacity: 1000\n"), []string{"storage.maxTotalCapacity of type string"}},
		{"YAML 1.1 boolean as a name", "clusterName: c\ninfraNamespace: no\nstorage: {defaultStorageClass: s}\n", []string{"infraNamespace of type string"}},
		{"bad bus", withStorage("  diskBus: ide\n"), []string{`storage.diskBus: Unsupported value: "ide": supported values: "scsi", "virtio"`}},
		{"bad volume mode", withStorage("  volumeMode: block\n"), []string{`storage.volumeMode: Unsupported value: "block"`}},
		{"bad hotplug", withStorage("  hotplug: Declarative\n"), []string{`storage.hotplug: Unsupported value: "Declarative": supported values: "subresource", "declarative"`}},
		{"bad default storage class", "clusterName: c\ninfraNamespace: ns\nstorage: {defaultStorageClass: Fast!}\n", []string{`storage.defaultStorageClass: Invalid value: "Fast!"`}},
		{"duplicate storage class", withStorage("  allowedStorageClasses: [a, a]\n"), []string{`storage.allowedStorageClasses[1]: Duplicate value: "a"`}},
		{"bad snapshot class", withStorage("  defaultSnapshotClass: Snap!\n"), []string{`storage.defaultSnapshotClass: Invalid value: "Snap!"`}},
		{"bad selector key", minimal + "autoscaling:\n  nodeGroupSelector: {\"bad key\": x}\n", []string{`autoscaling.nodeGroupSelector: Invalid value: "bad key"`}},
		{"bad selector value", minimal + "autoscaling:\n  nodeGroupSelector: {k: \"a b\"}\n", []string{`autoscaling.nodeGroupSelector[k]: Invalid value: "a b"`}},
		{"selector overrides cluster name", minimal + "autoscaling:\n  nodeGroupSelector: {cluster.x-k8s.io/cluster-name: other}\n", []string{`autoscaling.nodeGroupSelector[cluster.x-k8s.io/cluster-name]: Forbidden`}},
		{
			name: "all problems are reported together",
			yaml: "infraNamespace: ns\nstorage: {defaultStorageClass: s, diskBus: ide, maxVolumes: -1}\n",
			want: []string{"clusterName: Required value", "storage.diskBus", "storage.maxVolumes"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q; got %+v", tt.want, cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateFor(t *testing.T) {
	tests := []struct {
		name   string
		infra  string
		tenant string
		comp   Component
		want   string // "" = no error
	}{
		{"ccm with tenant kubeconfig", "", "/t", CCM, ""},
		{"ccm needs tenant kubeconfig", "/i", "", CCM, "tenantKubeconfig: Required value: ccm runs in the management cluster"},
		{"autoscaler needs tenant kubeconfig", "", "", Autoscaler, "tenantKubeconfig: Required value: autoscaler-provider"},
		{"csi-controller in-cluster everywhere", "", "", CSIController, ""},
		{"csi-node without infra credentials", "", "", CSINode, ""},
		{"csi-node with infra credentials", "/i", "", CSINode, "infraKubeconfig: Forbidden: csi-node runs inside the tenant and must not hold management credentials"},
		{"unknown component", "", "/t", Component("kubelet"), `unknown component "kubelet"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(minimal))
			if err != nil {
				t.Fatal(err)
			}
			cfg.InfraKubeconfig, cfg.TenantKubeconfig = tt.infra, tt.tenant
			err = cfg.ValidateFor(tt.comp)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("ValidateFor(%s) = %v, want nil", tt.comp, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ValidateFor(%s) = %v, want error containing %q", tt.comp, err, tt.want)
			}
		})
	}
}

// TestDefaultStorageClassOnlyForCSIController: only the program that provisions needs a
// default infra StorageClass; the others (csi-node above all, whose config has no storage at
// all) accept a config without one.
func TestDefaultStorageClassOnlyForCSIController(t *testing.T) {
	cfg, err := Parse([]byte("clusterName: c\ninfraNamespace: ns\ntenantKubeconfig: /t\n"))
	if err != nil {
		t.Fatalf("Parse without storage: %v", err)
	}
	for _, tt := range []struct {
		comp Component
		want string // "" = no error
	}{
		{CSIController, "storage.defaultStorageClass: Required value: csi-controller provisions"},
		{CSINode, ""},
		{CCM, ""},
		{Autoscaler, ""},
	} {
		err := cfg.ValidateFor(tt.comp)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateFor(%s) = %v, want nil", tt.comp, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidateFor(%s) = %v, want error containing %q", tt.comp, err, tt.want)
		}
	}
}

func TestValidateForIncludesValidate(t *testing.T) {
	cfg := &Config{ClusterName: "c", TenantKubeconfig: "/t"}
	cfg.Default()
	err := cfg.ValidateFor(CCM)
	if err == nil || !strings.Contains(err.Error(), "infraNamespace: Required value") {
		t.Fatalf("ValidateFor = %v, want the general validation errors too", err)
	}
}

func TestLoadExample(t *testing.T) {
	cfg, err := Load(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, c := range []Component{CCM, CSIController, Autoscaler} {
		if err := cfg.ValidateFor(c); err != nil {
			t.Errorf("ValidateFor(%s): %v", c, err)
		}
	}
	if cfg.ClusterName != "tenant-a" || cfg.Storage.MaxTotalBytes() != 10<<40 {
		t.Errorf("unexpected example contents: %+v", cfg)
	}
	if !cfg.LoadBalancer.IPAllowed(netip.MustParseAddr("198.51.100.15")) {
		t.Error("example range 198.51.100.10-198.51.100.20 does not allow 198.51.100.15")
	}
}

func TestLoadErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("storage: {diskBus: ide}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	tests := []struct {
		path string
		want []string
	}{
		{bad, []string{"loading config " + bad + ": ", "storage.diskBus"}},
		{missing, []string{"loading config " + missing + ": no such file or directory"}},
	}
	for _, tt := range tests {
		_, err := Load(tt.path)
		if err == nil {
			t.Fatalf("Load(%s) succeeded", tt.path)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Load(%s) = %q, want it to contain %q", tt.path, err, w)
			}
		}
	}
}

func TestAllowedHelpers(t *testing.T) {
	lb := LoadBalancer{AllowedPools: []string{"a", "b"}, DefaultPool: "a"}
	lbDefaultOnly := LoadBalancer{DefaultPool: "d"}
	st := Storage{AllowedStorageClasses: []string{"slow"}, DefaultStorageClass: "fast", DefaultSnapshotClass: "snap"}
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"listed pool", lb.PoolAllowed("b"), true},
		{"unlisted pool", lb.PoolAllowed("c"), false},
		{"empty pool name", lb.PoolAllowed(""), false},
		{"default pool without list", lbDefaultOnly.PoolAllowed("d"), true},
		{"other pool without list", lbDefaultOnly.PoolAllowed("a"), false},
		{"no pools at all", LoadBalancer{}.PoolAllowed("a"), false},
		{"default storage class", st.StorageClassAllowed("fast"), true},
		{"listed storage class", st.StorageClassAllowed("slow"), true},
		{"unlisted storage class", st.StorageClassAllowed("other"), false},
		{"empty storage class", st.StorageClassAllowed(""), false},
		{"default snapshot class", st.SnapshotClassAllowed("snap"), true},
		{"unlisted snapshot class", st.SnapshotClassAllowed("other"), false},
		{"empty snapshot class without default", Storage{}.SnapshotClassAllowed(""), false},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestMaxTotalBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"", 0},
		{"0", 0},
		{"1Ki", 1024},
		{"10Ti", 10 << 40},
		{"1G", 1e9},
		{"0.5", 1}, // rounded up so a tiny limit never becomes "unlimited"
		{"garbage", 1},
		{"-1Gi", 1},
	}
	for _, tt := range tests {
		if got := (Storage{MaxTotalCapacity: tt.in}).MaxTotalBytes(); got != tt.want {
			t.Errorf("MaxTotalBytes(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
