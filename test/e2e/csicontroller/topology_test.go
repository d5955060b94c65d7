package csicontroller_test

import (
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/test/fixture"
)

func zoneTopo(zones ...string) []*csi.Topology {
	var out []*csi.Topology
	for _, z := range zones {
		out = append(out, &csi.Topology{Segments: map[string]string{config.TopologyZoneKey: z}})
	}
	return out
}

func zonesOf(ts []*csi.Topology) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.GetSegments()[config.TopologyZoneKey])
	}
	return out
}

// TestVolumeTopologyController: with storage.topology the controller advertises accessibility
// constraints; a zonal volume lands in the first preferred zone its class reaches, on that
// zone's infra StorageClass, and says so in accessible_topology (CreateVolume, GetVolume,
// ListVolumes); it is hot-plugged into a VM in that zone and refused (FAILED_PRECONDITION,
// nothing written) for a VM in another; requirements a class cannot meet are RESOURCE_EXHAUSTED,
// malformed ones INVALID_ARGUMENT, a retry with requirements the existing volume misses
// ALREADY_EXISTS, and none of the refusals leaves a DataVolume behind.
func TestVolumeTopologyController(t *testing.T) {
	needSims(t)
	ctx := testCtx(t)
	if err := fixture.EnsureZoneClasses(ctx, kube(), "zone-a", "zone-b"); err != nil {
		t.Fatal(err)
	}
	tn := newTenant(t, "csi-topology", "topology", fixture.TopologyStorage("zone-a", "zone-a", "zone-b"))
	for vm, zone := range map[string]string{"topo-a": "zone-a", "topo-b": "zone-b"} {
		if err := fixture.CreateRunningVMInZone(ctx, kube(), tn.ns, tn.cluster, vm, zone); err != nil {
			t.Fatal(err)
		}
	}
	caps, err := tn.ctrl.Identity.GetPluginCapabilities(callCtx(t), &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	advertised := false
	for _, c := range caps.GetCapabilities() {
		advertised = advertised || c.GetService().GetType() == csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS
	}
	if !advertised {
		t.Fatalf("VOLUME_ACCESSIBILITY_CONSTRAINTS not advertised: %v", caps.GetCapabilities())
	}

	// What the provisioner sends for a WaitForFirstConsumer claim whose pod was scheduled in
	// zone-b: every zone of the tenant's nodes as requisite, the pod's first among preferred.
	req := createReq("pvc-zonal", 64*mib)
	req.Parameters = map[string]string{"infraStorageClassName": fixture.ZonalStorageClass}
	req.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: zoneTopo("zone-a", "zone-b"), Preferred: zoneTopo("zone-b", "zone-a")}
	rsp, err := tn.cc().CreateVolume(callCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	vol := rsp.GetVolume()
	if got := zonesOf(vol.GetAccessibleTopology()); !reflect.DeepEqual(got, []string{"zone-b"}) {
		t.Fatalf("accessible_topology zones %v, want [zone-b]", got)
	}
	dv := &cdiv1.DataVolume{}
	if err := kube().Get(ctx, client.ObjectKey{Namespace: tn.ns, Name: vol.GetVolumeId()}, dv); err != nil {
		t.Fatal(err)
	}
	if got := *dv.Spec.Storage.StorageClassName; got != fixture.ZoneStorageClass("zone-b") {
		t.Errorf("DataVolume on infra StorageClass %s, want %s", got, fixture.ZoneStorageClass("zone-b"))
	}
	get, err := tn.cc().ControllerGetVolume(callCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: vol.GetVolumeId()})
	if err != nil || !reflect.DeepEqual(zonesOf(get.GetVolume().GetAccessibleTopology()), []string{"zone-b"}) {
		t.Errorf("ControllerGetVolume = %v, %v; want zone-b", get, err)
	}
	list, err := tn.cc().ListVolumes(callCtx(t), &csi.ListVolumesRequest{})
	if err != nil || len(list.GetEntries()) != 1 || !reflect.DeepEqual(zonesOf(list.GetEntries()[0].GetVolume().GetAccessibleTopology()), []string{"zone-b"}) {
		t.Errorf("ListVolumes = %v, %v; want the volume in zone-b", list, err)
	}

	// A retry whose requisite the volume does not reach is another volume.
	retry := createReq("pvc-zonal", 64*mib)
	retry.Parameters = req.Parameters
	retry.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: zoneTopo("zone-a")}
	_, err = tn.cc().CreateVolume(callCtx(t), retry)
	wantCode(t, "retry with a requisite the volume misses", err, codes.AlreadyExists, "exists in zones [zone-b]")

	// Hot-plug: refused into zone-a's VM before anything is requested, done into zone-b's.
	_, err = tn.publish(vol.GetVolumeId(), "topo-a", nil)
	wantCode(t, "publish into a VM of another zone", err, codes.FailedPrecondition, "reachable from zones [zone-b] only; VM topo-a runs in zone \"zone-a\"")
	vm := &kubevirtv1.VirtualMachine{}
	if err := kube().Get(ctx, client.ObjectKey{Namespace: tn.ns, Name: "topo-a"}, vm); err != nil {
		t.Fatal(err)
	}
	if vmHasVolume(vm, vol.GetVolumeId()) {
		t.Error("the refused publish still hot-plugged the volume into topo-a")
	}
	tn.mustPublish(vol.GetVolumeId(), "topo-b", nil)
	if err := tn.unpublish(vol.GetVolumeId(), "topo-b"); err != nil {
		t.Fatal(err)
	}

	// Refusals that must create nothing.
	pinned := createReq("pvc-pinned", 64*mib)
	pinned.Parameters = map[string]string{"infraStorageClassName": fixture.FixedStorageClass}
	pinned.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: zoneTopo("zone-b")}
	_, err = tn.cc().CreateVolume(callCtx(t), pinned)
	wantCode(t, "class pinned to zone-a, requisite zone-b", err, codes.ResourceExhausted, `"linstor-e2e-fixed" reaches zones [zone-a] only`)
	foreign := createReq("pvc-foreign-key", 64*mib)
	foreign.Parameters = req.Parameters
	foreign.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{"kubernetes.io/hostname": "infra-a"}}}}
	_, err = tn.cc().CreateVolume(callCtx(t), foreign)
	wantCode(t, "a topology key that is not the zone", err, codes.InvalidArgument, "segments must be exactly {topology.kubernetes.io/zone: <zone>}")
	elsewhere := createReq("pvc-zone-d", 64*mib)
	elsewhere.Parameters = req.Parameters
	elsewhere.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: zoneTopo("zone-d")}
	_, err = tn.cc().CreateVolume(callCtx(t), elsewhere)
	wantCode(t, "a zone the operator did not configure", err, codes.ResourceExhausted, "none of them in the requisite zones [zone-d]")
	if n := len(dataVolumes(t, tn.ns)); n != 1 {
		t.Errorf("%d DataVolumes after the refusals, want only pvc-zonal's", n)
	}

	// A volume of a class reaching every zone is not confined: no topology, any VM.
	free := tn.create("pvc-free", 64*mib)
	if free.GetAccessibleTopology() != nil {
		t.Errorf("volume of an unlisted class reports topology %v", free.GetAccessibleTopology())
	}
	tn.mustPublish(free.GetVolumeId(), "topo-a", nil)
	if err := tn.unpublish(free.GetVolumeId(), "topo-a"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{vol.GetVolumeId(), free.GetVolumeId()} {
		if err := tn.delete(id); err != nil {
			t.Fatal(err)
		}
	}
}
