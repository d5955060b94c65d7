package config

import (
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Component names a tenantcloud program, for the requirements only it has.
type Component string

// The values are the program names, so they can be printed as they are.
const (
	CCM           Component = "ccm"
	CSIController Component = "csi-controller"
	CSINode       Component = "csi-node"
	Autoscaler    Component = "autoscaler-provider"
)

// Validate returns every problem in c, each naming its field path. It expects Default to have
// run, as Parse and Load do.
func (c *Config) Validate() error {
	return c.validate().ToAggregate()
}

// ValidateFor is Validate plus the requirements of component comp.
func (c *Config) ValidateFor(comp Component) error {
	errs := c.validate()
	switch comp {
	case CCM, Autoscaler:
		// These run in the management cluster, where in-cluster credentials would point at
		// the management API server instead of the tenant's.
		if c.TenantKubeconfig == "" {
			errs = append(errs, field.Required(field.NewPath("tenantKubeconfig"),
				fmt.Sprintf("%s runs in the management cluster, so in-cluster credentials would reach the wrong cluster", comp)))
		}
	case CSINode:
		if c.InfraKubeconfig != "" {
			errs = append(errs, field.Forbidden(field.NewPath("infraKubeconfig"),
				"csi-node runs inside the tenant and must not hold management credentials"))
		}
	case CSIController:
		// Talks only to the infra cluster; the CSI sidecars carry the tenant credentials. It
		// is the only program that provisions, so the only one needing a default class.
		if c.Storage.DefaultStorageClass == "" {
			errs = append(errs, field.Required(field.NewPath("storage", "defaultStorageClass"),
				"csi-controller provisions volumes of this infra StorageClass when the tenant names none"))
		}
	default:
		return fmt.Errorf("unknown component %q", comp)
	}
	return errs.ToAggregate()
}

func (c *Config) validate() field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateDNSLabel(c.ClusterName, field.NewPath("clusterName"))...)
	errs = append(errs, validateDNSLabel(c.InfraNamespace, field.NewPath("infraNamespace"))...)
	errs = append(errs, c.LoadBalancer.validate(field.NewPath("loadBalancer"))...)
	errs = append(errs, c.Storage.validate(field.NewPath("storage"))...)
	errs = append(errs, c.Autoscaling.validate(field.NewPath("autoscaling"))...)
	return errs
}

func (l *LoadBalancer) validate(p *field.Path) field.ErrorList {
	errs := validateNames(l.AllowedPools, p.Child("allowedPools"))
	if l.DefaultPool != "" {
		if len(l.AllowedPools) > 0 && !sets.New(l.AllowedPools...).Has(l.DefaultPool) {
			errs = append(errs, field.Invalid(p.Child("defaultPool"), l.DefaultPool,
				"must be one of loadBalancer.allowedPools"))
		} else {
			errs = append(errs, validateSubdomain(l.DefaultPool, p.Child("defaultPool"))...)
		}
	}
	for i, s := range l.AllowedIPRanges {
		if _, err := ParseIPRange(s); err != nil {
			errs = append(errs, field.Invalid(p.Child("allowedIPRanges").Index(i), s, err.Error()))
		}
	}
	errs = append(errs, validateNonNegative(l.MaxServices, p.Child("maxServices"))...)
	return errs
}

func (s *Storage) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateNames(s.AllowedStorageClasses, p.Child("allowedStorageClasses"))...)
	// Required only by csi-controller (ValidateFor); checked here when present.
	if s.DefaultStorageClass != "" {
		errs = append(errs, validateSubdomain(s.DefaultStorageClass, p.Child("defaultStorageClass"))...)
	}
	errs = append(errs, validateNames(s.AllowedSnapshotClasses, p.Child("allowedSnapshotClasses"))...)
	if s.DefaultSnapshotClass != "" {
		errs = append(errs, validateSubdomain(s.DefaultSnapshotClass, p.Child("defaultSnapshotClass"))...)
	}
	errs = append(errs, s.validateTopology(p.Child("topology"))...)
	errs = append(errs, validateNonNegative(s.MaxVolumes, p.Child("maxVolumes"))...)
	if _, err := parseCapacity(s.MaxTotalCapacity); err != nil {
		errs = append(errs, field.Invalid(p.Child("maxTotalCapacity"), s.MaxTotalCapacity, err.Error()))
	}
	switch s.DiskBus {
	case DiskBusSCSI, DiskBusVirtio:
	default:
		errs = append(errs, field.NotSupported(p.Child("diskBus"), s.DiskBus,
			[]DiskBus{DiskBusSCSI, DiskBusVirtio}))
	}
	switch s.VolumeMode {
	case VolumeModeBlock, VolumeModeFilesystem:
	default:
		errs = append(errs, field.NotSupported(p.Child("volumeMode"), s.VolumeMode,
			[]VolumeMode{VolumeModeBlock, VolumeModeFilesystem}))
	}
	switch s.Hotplug {
	case HotplugSubresource, HotplugDeclarative:
	default:
		errs = append(errs, field.NotSupported(p.Child("hotplug"), s.Hotplug,
			[]Hotplug{HotplugSubresource, HotplugDeclarative}))
	}
	return errs
}

func (a *Autoscaling) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	sel := p.Child("nodeGroupSelector")
	// Sorted so that the aggregated error is stable from run to run.
	keys := make([]string, 0, len(a.NodeGroupSelector))
	for k := range a.NodeGroupSelector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == ClusterNameLabel {
			// The cluster-name term is always added from clusterName; a second one could only
			// select nothing or, worse, suggest another cluster's groups are reachable.
			errs = append(errs, field.Forbidden(sel.Key(k), "is set from clusterName"))
			continue
		}
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(sel, k, msg))
		}
		v := a.NodeGroupSelector[k]
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(sel.Key(k), v, msg))
		}
	}
	return errs
}

func validateDNSLabel(v string, p *field.Path) field.ErrorList {
	return validateRequired(v, p, "", validation.IsDNS1123Label)
}

// validateRequired reports an empty v as Required (with detail), otherwise every message of
// check as Invalid.
func validateRequired(v string, p *field.Path, detail string, check func(string) []string) field.ErrorList {
	if v == "" {
		return field.ErrorList{field.Required(p, detail)}
	}
	var errs field.ErrorList
	for _, msg := range check(v) {
		errs = append(errs, field.Invalid(p, v, msg))
	}
	return errs
}

func validateSubdomain(v string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(v) {
		errs = append(errs, field.Invalid(p, v, msg))
	}
	return errs
}

// validateNames checks a list of object names: each a DNS-1123 subdomain, none repeated.
func validateNames(names []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := sets.New[string]()
	for i, n := range names {
		if seen.Has(n) {
			errs = append(errs, field.Duplicate(p.Index(i), n))
			continue
		}
		seen.Insert(n)
		errs = append(errs, validateSubdomain(n, p.Index(i))...)
	}
	return errs
}

func validateNonNegative(v int, p *field.Path) field.ErrorList {
	if v < 0 {
		return field.ErrorList{field.Invalid(p, v, "must be 0 (unlimited) or greater")}
	}
	return nil
}
