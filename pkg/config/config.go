// Package config is the one tenant configuration file shared by ccm, csi-controller, csi-node
// and autoscaler-provider. It describes which tenant a process serves (infra namespace +
// cluster name) and which infra resources the operator granted that tenant.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// ClusterNameLabel is the Cluster API label that CAPK puts on the tenant's VMs and that scopes
// every infra object tenantcloud reads or writes.
const ClusterNameLabel = "cluster.x-k8s.io/cluster-name"

// Config describes one tenant.
type Config struct {
	// ClusterName is the Cluster API cluster name of the tenant, a DNS-1123 label. Every infra
	// object tenantcloud reads or writes carries cluster.x-k8s.io/cluster-name=<clusterName>.
	// Required.
	ClusterName string `json:"clusterName"`
	// InfraNamespace is the management-cluster namespace holding the tenant's Cluster, VMs and
	// DataVolumes; tenantcloud's infra rights are a Role in it. Required.
	InfraNamespace string `json:"infraNamespace"`
	// InfraKubeconfig is a path to credentials for the management cluster; empty = in-cluster
	// (the pod's ServiceAccount). csi-node must leave it empty: it runs inside the tenant and
	// holds no management credentials.
	InfraKubeconfig string `json:"infraKubeconfig,omitempty"`
	// TenantKubeconfig is a path to credentials for the tenant cluster; empty = in-cluster.
	// Required by ccm and autoscaler-provider, which run in the management cluster.
	TenantKubeconfig string `json:"tenantKubeconfig,omitempty"`

	LoadBalancer LoadBalancer `json:"loadBalancer,omitempty"`
	Storage      Storage      `json:"storage"`
	Autoscaling  Autoscaling  `json:"autoscaling,omitempty"`
}

// LoadBalancer limits what the tenant's Services of type LoadBalancer may get from MetalLB.
type LoadBalancer struct {
	// AllowedPools are the MetalLB IPAddressPool names the tenant's Services may request
	// (annotation metallb.io/address-pool).
	AllowedPools []string `json:"allowedPools,omitempty"`
	// DefaultPool is used when a Service names no pool; defaults to the first allowed pool.
	// It must be one of allowedPools when those are given.
	DefaultPool string `json:"defaultPool,omitempty"`
	// AllowedIPRanges are the addresses a Service may ask for (metallb.io/loadBalancerIPs),
	// each a CIDR or an inclusive "first-last" range, IPv4 or IPv6; empty = any address of the
	// allowed pools.
	AllowedIPRanges []string `json:"allowedIPRanges,omitempty"`
	// MaxServices caps the number of LoadBalancer Services; 0 = unlimited.
	MaxServices int `json:"maxServices,omitempty"`
}

// DiskBus is the KubeVirt disk bus used when hot-plugging a volume into a VM.
type DiskBus string

// Hot-plug only supports these two buses in KubeVirt.
const (
	DiskBusSCSI   DiskBus = "scsi"
	DiskBusVirtio DiskBus = "virtio"
)

// Hotplug is how csi-controller hot-plugs a volume into a VM: which KubeVirt API it drives.
type Hotplug string

// The two ways KubeVirt offers. Both put the same volume and disk into the VM's template, so a
// switch between them needs no migration: either mode unplugs what the other plugged.
const (
	// HotplugSubresource calls virt-api's addvolume/removevolume subresources
	// (subresources.kubevirt.io); KubeVirt needs the HotplugVolumes or the
	// DeclarativeHotplugVolumes feature gate.
	HotplugSubresource Hotplug = "subresource"
	// HotplugDeclarative patches the VM's spec.template.spec volumes and disks and lets
	// KubeVirt's VM controller hot-plug them into the running VMI; KubeVirt needs the
	// DeclarativeHotplugVolumes feature gate with HotplugVolumes off (while HotplugVolumes is
	// on, KubeVirt ignores such spec changes until the VM restarts).
	HotplugDeclarative Hotplug = "declarative"
)

// VolumeMode is the volume mode of the infra DataVolume backing a tenant volume.
type VolumeMode string

// The values mirror core/v1 PersistentVolumeMode so they can be converted directly.
const (
	VolumeModeBlock      VolumeMode = "Block"
	VolumeModeFilesystem VolumeMode = "Filesystem"
)

// Storage limits which infra storage the tenant's volumes may use.
type Storage struct {
	// AllowedStorageClasses are the infra StorageClasses a tenant StorageClass may name
	// (parameter infraStorageClassName); defaultStorageClass is always allowed.
	AllowedStorageClasses []string `json:"allowedStorageClasses,omitempty"`
	// DefaultStorageClass is the infra StorageClass of volumes whose tenant StorageClass names
	// none. Required by csi-controller (the only program that provisions).
	DefaultStorageClass string `json:"defaultStorageClass,omitempty"`
	// AllowedSnapshotClasses are the infra VolumeSnapshotClasses the tenant may use;
	// defaultSnapshotClass is always allowed.
	AllowedSnapshotClasses []string `json:"allowedSnapshotClasses,omitempty"`
	// DefaultSnapshotClass is the infra VolumeSnapshotClass of snapshots whose tenant class
	// names none; empty = snapshots are refused.
	DefaultSnapshotClass string `json:"defaultSnapshotClass,omitempty"`
	// MaxVolumes caps the number of volumes; 0 = unlimited.
	MaxVolumes int `json:"maxVolumes,omitempty"`
	// MaxTotalCapacity is a quantity such as "10Ti" (quote it in YAML) capping the summed
	// volume sizes; empty or "0" = unlimited.
	//
	// A string rather than resource.Quantity so that a bad value is reported by Validate with
	// its field path instead of as an anonymous decoding error.
	MaxTotalCapacity string `json:"maxTotalCapacity,omitempty"`
	// DiskBus is the bus volumes are hot-plugged on; defaults to scsi.
	DiskBus DiskBus `json:"diskBus,omitempty"`
	// VolumeMode is the volume mode of the infra DataVolumes; defaults to Block (RWX Block is
	// what live migration needs).
	VolumeMode VolumeMode `json:"volumeMode,omitempty"`
	// Hotplug is how volumes are hot-plugged into the tenant's VMs: subresource (virt-api's
	// addvolume/removevolume, the default) or declarative (csi-controller patches the VM spec;
	// needs KubeVirt's DeclarativeHotplugVolumes feature gate with HotplugVolumes off, and the
	// chart then grants patch on virtualmachines instead of the subresources).
	Hotplug Hotplug `json:"hotplug,omitempty"`
	// RetainDataVolumes keeps the tenant's DataVolumes when its Cluster API Cluster is
	// deleted: they are created without the owner reference to the Cluster that every other
	// infra object tenantcloud creates carries, so the garbage collector leaves them (the data
	// is the tenant's; delete them by the cluster-name label once it is saved). Default false:
	// the DataVolumes go with the Cluster, and existing ones without the reference get it on
	// their next ControllerPublishVolume.
	RetainDataVolumes bool `json:"retainDataVolumes,omitempty"`
	// Topology says, per granted infra StorageClass, which zones (topology.kubernetes.io/zone,
	// the label the ccm copies onto tenant Nodes from the infra Node running each VM) its
	// volumes reach; a class not listed reaches every zone. Set, it turns on volume topology:
	// csi-controller advertises accessibility constraints, places each volume in a zone the
	// tenant's requirements allow and refuses to hot-plug it into a VM running elsewhere; the
	// ccm must label Nodes with zones (ccm.nodeZones) and csi-node must wait for that label
	// (tenant chart topology.enabled).
	Topology map[string]ClassTopology `json:"topology,omitempty"`
}

// Autoscaling configures which MachineDeployments are exposed as node groups.
type Autoscaling struct {
	// NodeGroupSelector holds extra labels a MachineDeployment must carry to be a node
	// group; ANDed with cluster.x-k8s.io/cluster-name=<clusterName>, which must not be
	// repeated here.
	NodeGroupSelector map[string]string `json:"nodeGroupSelector,omitempty"`
}

// Load reads, decodes, defaults and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// The path is added below; drop the copy *PathError carries to avoid printing it twice.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("loading config %s: %w", path, err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("loading config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse strictly decodes data (YAML or JSON), then applies Default and Validate.
func Parse(data []byte) (*Config, error) {
	// YAMLToJSONStrict rejects duplicate keys. The JSON step then uses sigs.k8s.io/json rather
	// than encoding/json because it matches keys case-sensitively and names the full path of
	// an unknown field ("storage.foo"), which encoding/json does not.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	cfg := &Config{}
	strictErrs, err := sigsjson.UnmarshalStrict(js, cfg)
	if err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if len(strictErrs) > 0 {
		// One line per config error reads better than errors.Join's newline-separated list.
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("decoding: %s", strings.Join(msgs, "; "))
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Default fills in optional fields that have a documented default.
func (c *Config) Default() {
	if c.LoadBalancer.DefaultPool == "" && len(c.LoadBalancer.AllowedPools) > 0 {
		c.LoadBalancer.DefaultPool = c.LoadBalancer.AllowedPools[0]
	}
	if c.Storage.DiskBus == "" {
		c.Storage.DiskBus = DiskBusSCSI
	}
	if c.Storage.VolumeMode == "" {
		c.Storage.VolumeMode = VolumeModeBlock
	}
	if c.Storage.Hotplug == "" {
		c.Storage.Hotplug = HotplugSubresource
	}
}

// PoolAllowed reports whether the tenant may request the MetalLB pool name. DefaultPool is
// always allowed, so with no AllowedPools only DefaultPool (if any) may be named.
func (l LoadBalancer) PoolAllowed(name string) bool {
	if name == "" {
		return false
	}
	return name == l.DefaultPool || slices.Contains(l.AllowedPools, name)
}

// IPAllowed reports whether addr lies in AllowedIPRanges. An empty list allows any address,
// i.e. whatever the allowed pools hand out.
//
// Entries are parsed on each call instead of being cached so a LoadBalancer stays a plain
// value; an entry that does not parse (only possible if Validate was skipped) matches nothing,
// so a broken config narrows rather than widens what the tenant may use.
func (l LoadBalancer) IPAllowed(addr netip.Addr) bool {
	if len(l.AllowedIPRanges) == 0 {
		return true
	}
	// Tenants may write an IPv4 address in IPv4-mapped IPv6 form; MetalLB treats it as IPv4,
	// so it must be checked as IPv4 too.
	addr = addr.Unmap()
	for _, s := range l.AllowedIPRanges {
		r, err := ParseIPRange(s)
		if err == nil && r.Contains(addr) {
			return true
		}
	}
	return false
}

// StorageClassAllowed reports whether the tenant may use the infra StorageClass name.
func (s Storage) StorageClassAllowed(name string) bool {
	if name == "" {
		return false
	}
	return name == s.DefaultStorageClass || slices.Contains(s.AllowedStorageClasses, name)
}

// SnapshotClassAllowed reports whether the tenant may use the infra VolumeSnapshotClass name.
func (s Storage) SnapshotClassAllowed(name string) bool {
	if name == "" {
		return false
	}
	return name == s.DefaultSnapshotClass || slices.Contains(s.AllowedSnapshotClasses, name)
}

// MaxTotalBytes returns MaxTotalCapacity in bytes, 0 meaning unlimited.
//
// Validate rejects values that do not parse, are negative or overflow int64. Should an
// unvalidated value still get here it yields 1 byte rather than 0: a quota that cannot be read
// must deny, not grant, unlimited capacity.
func (s Storage) MaxTotalBytes() int64 {
	q, err := parseCapacity(s.MaxTotalCapacity)
	if err != nil {
		return 1
	}
	return q
}

// parseCapacity is shared by MaxTotalBytes and Validate so both agree on what is valid.
func parseCapacity(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, err
	}
	if q.Sign() < 0 {
		return 0, errors.New("must not be negative")
	}
	if q.CmpInt64(math.MaxInt64) > 0 {
		return 0, errors.New("must fit in a 64-bit byte count")
	}
	// Value rounds a fractional byte count up, so a tiny limit such as "0.5" never turns into
	// 0, which would mean unlimited.
	return q.Value(), nil
}
