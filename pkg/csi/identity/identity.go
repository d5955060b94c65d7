// Package identity is the CSI Identity service shared by the tenantcloud CSI binaries. Both
// csi-controller and csi-node serve it next to their own service; they differ only in the
// plugin capabilities they advertise and in what "ready" means, so both are parameters.
package identity

import (
	"context"
	"maps"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/klog/v2"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

// Options configure a Server. The zero value serves the tenantcloud driver name and build
// version with no capabilities and is always ready.
type Options struct {
	// Name is the driver name; empty means csi.DriverName.
	Name string
	// VendorVersion is reported as vendor_version; empty means version.Version.
	VendorVersion string
	// Capabilities are returned by GetPluginCapabilities in this order.
	Capabilities []*csi.PluginCapability
	// Manifest is optional opaque information for GetPluginInfo.
	Manifest map[string]string
	// Ready answers Probe: nil means ready. A nil func means always ready. It should be cheap,
	// because the livenessprobe sidecar calls Probe every few seconds.
	Ready func(ctx context.Context) error
}

// Server implements csi.IdentityServer.
type Server struct {
	csi.UnimplementedIdentityServer
	opts Options
}

var _ csi.IdentityServer = (*Server)(nil)

// New returns an Identity server for opts.
func New(opts Options) *Server {
	if opts.Name == "" {
		opts.Name = tccsi.DriverName
	}
	if opts.VendorVersion == "" {
		opts.VendorVersion = version.Version
	}
	// Copies, so a caller changing its slice or map later cannot change what is advertised.
	opts.Capabilities = slices.Clone(opts.Capabilities)
	opts.Manifest = maps.Clone(opts.Manifest)
	return &Server{opts: opts}
}

// Service is a plugin capability of type Service, e.g. CONTROLLER_SERVICE.
func Service(t csi.PluginCapability_Service_Type) *csi.PluginCapability {
	return &csi.PluginCapability{Type: &csi.PluginCapability_Service_{
		Service: &csi.PluginCapability_Service{Type: t}}}
}

// Expansion is a plugin capability of type VolumeExpansion, e.g. ONLINE.
func Expansion(t csi.PluginCapability_VolumeExpansion_Type) *csi.PluginCapability {
	return &csi.PluginCapability{Type: &csi.PluginCapability_VolumeExpansion_{
		VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: t}}}
}

// DriverCapabilities is everything the tenantcloud driver as a whole supports: a controller
// service, topology constraints and online expansion (the guest sees a hot-plugged disk grow
// while it is mounted).
func DriverCapabilities() []*csi.PluginCapability {
	return []*csi.PluginCapability{
		Service(csi.PluginCapability_Service_CONTROLLER_SERVICE),
		Service(csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS),
		Expansion(csi.PluginCapability_VolumeExpansion_ONLINE),
	}
}

// NodeCapabilities is what a csi-node's Identity service advertises. It is the driver's set
// (csi-sanity and other tools read plugin capabilities from the node endpoint too, and the
// plugin is one driver), except that topology constraints are advertised only when the node
// can report a zone: a driver advertising them must return a topology from NodeGetInfo.
func NodeCapabilities(hasTopology bool) []*csi.PluginCapability {
	var caps []*csi.PluginCapability
	for _, c := range DriverCapabilities() {
		if !hasTopology && c.GetService().GetType() == csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS {
			continue
		}
		caps = append(caps, c)
	}
	return caps
}

// GetPluginInfo reports the driver name and version.
func (s *Server) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{
		Name:          s.opts.Name,
		VendorVersion: s.opts.VendorVersion,
		Manifest:      s.opts.Manifest,
	}, nil
}

// GetPluginCapabilities reports the capabilities given to New.
func (s *Server) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: s.opts.Capabilities}, nil
}

// Probe reports readiness. Not being ready is an answer, not an error: the spec reserves
// errors for a plugin that cannot answer at all, and the livenessprobe sidecar reads ready.
func (s *Server) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if s.opts.Ready != nil {
		if err := s.opts.Ready(ctx); err != nil {
			klog.FromContext(ctx).V(2).Info("Probe: not ready", "reason", err.Error())
			return &csi.ProbeResponse{Ready: wrapperspb.Bool(false)}, nil
		}
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
