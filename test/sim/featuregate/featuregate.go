// Package featuregate holds the KubeVirt feature gates the simulators honour. KubeVirt reads
// them from its CR (spec.configuration.developerConfiguration.featureGates) and follows
// changes while it runs; so do the simulators: Set takes effect on the next request or sync.
//
// Only the two hot-plug gates are modelled, with the precedence kubevirt/kubevirt v1.8.1 gives
// them (pkg/virt-api/rest/volumes.go, pkg/virt-controller/watch/vm/vm.go):
//
//	HotplugVolumes  Declarative…  virt-api add/removevolume         VM spec changes of a running VM
//	on              any           VM: via vm.status.volumeRequests  ignored until restart
//	                              VMI: allowed on any VMI
//	off             on            VM: patches the VM spec           hot-plugged into the VMI
//	                              VMI: 400 when a VM owns the VMI   by the VM controller
//	off             off           400 "Enable … feature gate"       ignored until restart
package featuregate

import (
	"slices"
	"sync"
)

// The gates modelled.
const (
	HotplugVolumes            = "HotplugVolumes"
	DeclarativeHotplugVolumes = "DeclarativeHotplugVolumes"
)

// Gates is the live set of enabled gates, shared by every simulator of one management
// cluster. A nil *Gates is the default: HotplugVolumes on (what the simulators always did).
type Gates struct {
	mu sync.RWMutex
	on []string
}

// New returns gates with exactly names enabled.
func New(names ...string) *Gates { return &Gates{on: slices.Clone(names)} }

// Set replaces the enabled gates, as an edit of the KubeVirt CR does.
func (g *Gates) Set(names ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.on = slices.Clone(names)
}

// Enabled reports whether gate name is on.
func (g *Gates) Enabled(name string) bool {
	if g == nil {
		return name == HotplugVolumes
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	return slices.Contains(g.on, name)
}

// HotplugAPI reports whether virt-api serves addvolume/removevolume at all.
func (g *Gates) HotplugAPI() bool {
	return g.Enabled(HotplugVolumes) || g.Enabled(DeclarativeHotplugVolumes)
}

// Ephemeral reports whether the legacy hot-plug applies: VMI-level requests on VM-owned VMIs
// and VM-level requests queued in vm.status.volumeRequests.
func (g *Gates) Ephemeral() bool { return g.Enabled(HotplugVolumes) }

// Declarative reports whether the VM controller hot-plugs VM spec changes into the running
// VMI: DeclarativeHotplugVolumes on and HotplugVolumes off (HotplugVolumes wins).
func (g *Gates) Declarative() bool {
	return !g.Enabled(HotplugVolumes) && g.Enabled(DeclarativeHotplugVolumes)
}
