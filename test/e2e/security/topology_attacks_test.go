package security_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/test/fixture"
)

// The zones of alpha's volume topology (storage()); the simulator's infra nodes are in zone-a,
// zone-b and zone-c.
const zoneA, zoneB = "zone-a", "zone-b"

func zoneTopologies(zones ...string) []*csi.Topology {
	out := make([]*csi.Topology, 0, len(zones))
	for _, z := range zones {
		out = append(out, &csi.Topology{Segments: map[string]string{config.TopologyZoneKey: z}})
	}
	return out
}

// zonalReq is a CreateVolume of alpha's zonal class with the requirements a tenant chose: the
// external-provisioner passes on whatever the tenant's Nodes and CSINodes say, so every
// segment is tenant input.
func zonalReq(name string, class string, requisite, preferred []*csi.Topology) *csi.CreateVolumeRequest {
	req := createReq(name, 16*mib)
	req.Parameters = map[string]string{controller.ParamInfraStorageClass: class}
	req.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: requisite, Preferred: preferred}
	return req
}

// topologyAttacks: the accessibility requirements of CreateVolume are the one new input volume
// topology lets a tenant send (its Node labels and CSINode topology keys become the
// provisioner's segments). Only {topology.kubernetes.io/zone: <label value>} segments are
// accepted, at most 256 of them; a volume never lands in a zone the grant does not place the
// class in; and a volume is never hot-plugged into a VM in a zone it does not reach, whatever
// the PV's node affinity said.
func topologyAttacks() []attack {
	return []attack{
		{"12a", "CreateVolume topology: hostname / extra / foreign key, zone not a label value", "InvalidArgument, no DataVolume", func(t *testing.T, w *world) outcome {
			var res []string
			for _, c := range []struct {
				what     string
				segments map[string]string
			}{
				{"hostname", map[string]string{corev1.LabelHostname: "infra-a"}},
				{"extra", map[string]string{config.TopologyZoneKey: zoneA, "kubernetes.io/hostname": "infra-a"}},
				{"foreign", map[string]string{"topology.linstor.csi.linbit.com/node": "infra-a"}},
				{"value", map[string]string{config.TopologyZoneKey: "../" + strings.Repeat("z", 70)}},
			} {
				top := []*csi.Topology{{Segments: c.segments}}
				_, err := w.csiCtrl.Controller.CreateVolume(w.call(t), zonalReq("topo-"+c.what, fixture.ZonalStorageClass, top, top))
				res = append(res, code(t, c.what, err, codes.InvalidArgument))
			}
			return refused(strings.Join(res, ", "))
		}},
		{"12b", "CreateVolume with 257 topologies", "InvalidArgument, no DataVolume", func(t *testing.T, w *world) outcome {
			var zones []string
			for i := range 257 {
				zones = append(zones, fmt.Sprintf("zone-%d", i))
			}
			_, err := w.csiCtrl.Controller.CreateVolume(w.call(t), zonalReq("topo-many", fixture.ZonalStorageClass, zoneTopologies(zones[:200]...), zoneTopologies(zones[200:]...)))
			return refused(code(t, "257", err, codes.InvalidArgument))
		}},
		{"12c", "CreateVolume in zones the grant places nothing of the class", "ResourceExhausted, no DataVolume", func(t *testing.T, w *world) outcome {
			var res []string
			for _, c := range []struct{ what, class, zone string }{
				{"zonal in zone-c", fixture.ZonalStorageClass, "zone-c"},
				{"zone-a class in zone-b", fixture.FixedStorageClass, zoneB},
			} {
				top := zoneTopologies(c.zone)
				_, err := w.csiCtrl.Controller.CreateVolume(w.call(t), zonalReq("topo-"+strings.ReplaceAll(c.what, " ", "-"), c.class, top, top))
				res = append(res, code(t, c.what, err, codes.ResourceExhausted))
			}
			return refused(strings.Join(res, ", "))
		}},
		{"12d", "publish a volume of another zone into our VM (PV node affinity ignored)", "FailedPrecondition, VM untouched", func(t *testing.T, w *world) outcome {
			// The zone of alpha's VM, from the infra Node its VMI runs on, and a configured
			// zone other than it.
			vmi := &kubevirtv1.VirtualMachineInstance{}
			w.must(t, w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: w.alphaVM}, vmi))
			infraNode := &corev1.Node{}
			w.must(t, w.mgmt.Get(w.ctx, client.ObjectKey{Name: vmi.Status.NodeName}, infraNode))
			other := zoneA
			if infraNode.Labels[corev1.LabelTopologyZone] == zoneA {
				other = zoneB
			}
			rsp, err := w.csiCtrl.Controller.CreateVolume(w.call(t), zonalReq("topo-elsewhere", fixture.ZonalStorageClass, zoneTopologies(other), nil))
			if err != nil {
				t.Fatalf("CreateVolume in %s: %v", other, err)
			}
			id := rsp.GetVolume().GetVolumeId()
			t.Cleanup(func() { w.deleteVolume(t, id) })
			r := code(t, fmt.Sprintf("publish %s volume into VM in %s", other, infraNode.Labels[corev1.LabelTopologyZone]), w.publish(t, id, w.alphaVM), codes.FailedPrecondition)
			return refused(r, volumeKeys("topo-elsewhere")...)
		}},
	}
}
