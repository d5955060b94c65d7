package identity

import (
	"context"
	"errors"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

func TestGetPluginInfoDefaults(t *testing.T) {
	info, err := New(Options{}).GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetName() != tccsi.DriverName || info.GetVendorVersion() != version.Version {
		t.Errorf("GetPluginInfo = %q %q, want %q %q", info.GetName(), info.GetVendorVersion(), tccsi.DriverName, version.Version)
	}
}

func TestGetPluginCapabilities(t *testing.T) {
	caps := DriverCapabilities()
	s := New(Options{Capabilities: caps})
	caps[0] = Service(csi.PluginCapability_Service_UNKNOWN) // must not leak into s

	rsp, err := s.GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var services []csi.PluginCapability_Service_Type
	var expansion []csi.PluginCapability_VolumeExpansion_Type
	for _, c := range rsp.GetCapabilities() {
		if svc := c.GetService(); svc != nil {
			services = append(services, svc.GetType())
		}
		if e := c.GetVolumeExpansion(); e != nil {
			expansion = append(expansion, e.GetType())
		}
	}
	wantServices := []csi.PluginCapability_Service_Type{
		csi.PluginCapability_Service_CONTROLLER_SERVICE,
		csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS,
	}
	if len(services) != 2 || services[0] != wantServices[0] || services[1] != wantServices[1] {
		t.Errorf("services = %v, want %v", services, wantServices)
	}
	if len(expansion) != 1 || expansion[0] != csi.PluginCapability_VolumeExpansion_ONLINE {
		t.Errorf("expansion = %v, want [ONLINE]", expansion)
	}

	none, _ := New(Options{}).GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
	if len(none.GetCapabilities()) != 0 {
		t.Errorf("zero Options advertise %v, want nothing", none.GetCapabilities())
	}
}

func TestProbe(t *testing.T) {
	var notReady error
	s := New(Options{Ready: func(context.Context) error { return notReady }})
	for _, tt := range []struct {
		err  error
		want bool
	}{{nil, true}, {errors.New("node identity not resolved"), false}} {
		notReady = tt.err
		rsp, err := s.Probe(context.Background(), &csi.ProbeRequest{})
		if err != nil {
			t.Fatalf("Probe: %v", err)
		}
		if rsp.GetReady().GetValue() != tt.want {
			t.Errorf("Probe with Ready()=%v: ready=%v, want %v", tt.err, rsp.GetReady().GetValue(), tt.want)
		}
	}
	rsp, _ := New(Options{}).Probe(context.Background(), &csi.ProbeRequest{})
	if !rsp.GetReady().GetValue() {
		t.Error("Probe without a Ready func is not ready")
	}
}

func TestNodeCapabilities(t *testing.T) {
	has := func(caps []*csi.PluginCapability, want csi.PluginCapability_Service_Type) bool {
		for _, c := range caps {
			if c.GetService().GetType() == want {
				return true
			}
		}
		return false
	}
	with, without := NodeCapabilities(true), NodeCapabilities(false)
	if !has(with, csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS) || has(without, csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS) {
		t.Errorf("topology constraints must follow the node's topology: with=%v without=%v", with, without)
	}
	if !has(without, csi.PluginCapability_Service_CONTROLLER_SERVICE) || len(without) != len(with)-1 {
		t.Errorf("the rest of the driver's capabilities must stay: %v", without)
	}
}
