package security_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/csi/node"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/infrastate"
)

func (w *world) publish(t *testing.T, vol, nodeID string) error {
	_, err := w.csiCtrl.Controller.ControllerPublishVolume(w.call(t), &csi.ControllerPublishVolumeRequest{
		VolumeId: vol, NodeId: nodeID, VolumeCapability: mountCap()})
	return err
}

func (w *world) unpublish(t *testing.T, vol, nodeID string) error {
	_, err := w.csiCtrl.Controller.ControllerUnpublishVolume(w.call(t), &csi.ControllerUnpublishVolumeRequest{VolumeId: vol, NodeId: nodeID})
	return err
}

func nodeIDAttacks() []attack {
	publishTo := func(nodeIDs ...string) func(t *testing.T, w *world) outcome {
		return func(t *testing.T, w *world) outcome {
			var res []string
			for _, n := range nodeIDs {
				res = append(res, code(t, "publish to "+n, w.publish(t, w.alphaVol, n), codes.NotFound))
			}
			return refused(strings.Join(res, ", "))
		}
	}
	return []attack{
		{"2a", "publish our volume to beta's VM (node ID)", "NotFound", publishTo(betaVM)},
		{"2b", "publish our volume to gamma's VM, other namespace", "NotFound", publishTo(gammaVM, otherNS+"/"+gammaVM)},
		{"2c", "node ID spelled as a providerID / path", "NotFound", publishTo(infra.ProviderID(betaVM), "../"+betaVM)},
		{"2d", "CSINode whose nodeID names beta's VM", "NotFound on publish", func(t *testing.T, w *world) outcome {
			cn := &storagev1.CSINode{
				ObjectMeta: metav1.ObjectMeta{Name: "evil-csinode"},
				Spec:       storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: tccsi.DriverName, NodeID: betaVM}}},
			}
			w.create(t, w.tenant, cn)
			t.Cleanup(func() { _ = w.tenant.Delete(context.Background(), cn) })
			// What the external-attacher reads back is what it passes on.
			got := &storagev1.CSINode{}
			w.must(t, w.tenant.Get(w.ctx, client.ObjectKeyFromObject(cn), got))
			return refused(code(t, "publish to CSINode nodeID "+got.Spec.Drivers[0].NodeID, w.publish(t, w.alphaVol, got.Spec.Drivers[0].NodeID), codes.NotFound))
		}},
		{"2e", "Node providerID = beta's VM → csi-node identity → (un)publish", "publish NotFound; unpublish no-op", func(t *testing.T, w *world) outcome {
			n := w.craftedNode(t, "evil-identity", infra.ProviderID(betaVM), nil)
			// Read back at once: the ccm's lifecycle controller deletes such a Node soon.
			w.must(t, w.tenant.Get(w.ctx, client.ObjectKeyFromObject(n), n))
			id, err := node.IdentityFromNode(n)
			if err != nil {
				t.Fatalf("csi-node identity from the crafted Node: %v", err)
			}
			return refused("identity " + id.NodeID + "; " + code(t, "publish", w.publish(t, w.alphaVol, id.NodeID), codes.NotFound) +
				"; " + ok(t, "unpublish beta's volume", w.unpublish(t, w.betaVol, id.NodeID)))
		}},
		{"2f", "unpublish our volume from beta's / gamma's VM", "OK no-op, their VMs untouched", func(t *testing.T, w *world) outcome {
			return refused(ok(t, "from "+betaVM, w.unpublish(t, w.alphaVol, betaVM)) + ", " + ok(t, "from "+gammaVM, w.unpublish(t, w.alphaVol, gammaVM)))
		}},
	}
}

func unpublishAttacks() []attack {
	return []attack{
		{"3a", "unpublish beta's volume from beta's VM", "OK no-op, disk stays attached", func(t *testing.T, w *world) outcome {
			r := ok(t, "unpublish", w.unpublish(t, w.betaVol, betaVM))
			return refused(r + "; " + w.betaAttached(t))
		}},
		{"3b", "unpublish beta's volume from all nodes", "OK no-op, disk stays attached", func(t *testing.T, w *world) outcome {
			r := ok(t, "unpublish", w.unpublish(t, w.betaVol, ""))
			return refused(r + "; " + w.betaAttached(t))
		}},
		{"3c", "unpublish a root disk from the VM booting from it", "NotFound, root disk stays", func(t *testing.T, w *world) outcome {
			return refused(code(t, "unpublish", w.unpublish(t, w.rootDisk, bootVM), codes.NotFound) + "; " +
				code(t, "from all", w.unpublish(t, w.rootDisk, ""), codes.NotFound))
		}},
		{"3d", "unpublish a forged-label DataVolume", "NotFound", func(t *testing.T, w *world) outcome {
			return refused(code(t, "unpublish", w.unpublish(t, w.lookalike, w.alphaVM), codes.NotFound))
		}},
	}
}

func foreignVolumeOpAttacks() []attack {
	expand := func(h string) func(t *testing.T, w *world) outcome {
		return func(t *testing.T, w *world) outcome {
			_, err := w.csiCtrl.Controller.ControllerExpandVolume(w.call(t), &csi.ControllerExpandVolumeRequest{
				VolumeId: h, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
			return refused(code(t, "expand", err, codes.NotFound))
		}
	}
	snapshot := func(h string) func(t *testing.T, w *world) outcome {
		return func(t *testing.T, w *world) outcome {
			_, err := w.csiCtrl.Controller.CreateSnapshot(w.call(t), &csi.CreateSnapshotRequest{Name: "steal-" + h, SourceVolumeId: h})
			return refused(code(t, "snapshot", err, codes.NotFound))
		}
	}
	del := func(h string) func(t *testing.T, w *world) outcome {
		return func(t *testing.T, w *world) outcome {
			_, err := w.csiCtrl.Controller.DeleteVolume(w.call(t), &csi.DeleteVolumeRequest{VolumeId: h})
			return refused(ok(t, "delete", err))
		}
	}
	return []attack{
		{"4a", "expand beta's volume", "NotFound", func(t *testing.T, w *world) outcome { return expand(w.betaVol)(t, w) }},
		{"4b", "expand a root disk", "NotFound", func(t *testing.T, w *world) outcome { return expand(w.rootDisk)(t, w) }},
		{"4c", "snapshot beta's volume", "NotFound", func(t *testing.T, w *world) outcome { return snapshot(w.betaVol)(t, w) }},
		{"4d", "snapshot a root disk", "NotFound", func(t *testing.T, w *world) outcome { return snapshot(w.rootDisk)(t, w) }},
		{"4e", "delete beta's volume", "OK (not ours = absent), DataVolume stays", func(t *testing.T, w *world) outcome { return del(w.betaVol)(t, w) }},
		{"4f", "delete a root disk", "OK (not ours = absent), DataVolume stays", func(t *testing.T, w *world) outcome { return del(w.rootDisk)(t, w) }},
		{"4g", "delete a forged-label DataVolume", "OK (not ours = absent), DataVolume stays", func(t *testing.T, w *world) outcome { return del(w.lookalike)(t, w) }},
		{"4h", "delete gamma's volume (other namespace)", "OK (not ours = absent), DataVolume stays", func(t *testing.T, w *world) outcome { return del(w.gammaVol)(t, w) }},
		{"4i", "delete / read / restore beta's snapshot", "delete OK no-op; get, restore NotFound; not listed", func(t *testing.T, w *world) outcome {
			cc := w.csiCtrl.Controller
			_, err := cc.DeleteSnapshot(w.call(t), &csi.DeleteSnapshotRequest{SnapshotId: w.betaSnap})
			res := []string{ok(t, "delete", err)}
			_, err = cc.GetSnapshot(w.call(t), &csi.GetSnapshotRequest{SnapshotId: w.betaSnap})
			res = append(res, code(t, "get", err, codes.NotFound))
			req := createReq("restore-beta", 16*mib)
			req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
				Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: w.betaSnap}}}
			_, err = cc.CreateVolume(w.call(t), req)
			res = append(res, code(t, "restore", err, codes.NotFound))
			list, err := cc.ListSnapshots(w.call(t), &csi.ListSnapshotsRequest{})
			if err != nil || len(list.GetEntries()) != 0 {
				t.Errorf("alpha lists snapshots %v, %v", list.GetEntries(), err)
			}
			vols, err := cc.ListVolumes(w.call(t), &csi.ListVolumesRequest{})
			if err != nil || len(vols.GetEntries()) != 1 || vols.GetEntries()[0].GetVolume().GetVolumeId() != w.alphaVol {
				t.Errorf("alpha lists volumes %v, %v; want only its own", vols.GetEntries(), err)
			}
			return refused(strings.Join(append(res, "lists: own only"), ", "))
		}},
	}
}

func volumeKeys(names ...string) []string {
	var out []string
	for _, n := range names {
		id := controller.VolumeID(cluster, n)
		out = append(out, infrastate.KeyOf("DataVolume", infraNS, id), infrastate.KeyOf("PVC", infraNS, id))
	}
	return out
}

func csiQuotaAttacks() []attack {
	return []attack{
		{"9a", "CreateVolume above maxTotalCapacity (2Gi > 1Gi)", "OutOfRange/ResourceExhausted", func(t *testing.T, w *world) outcome {
			_, err := w.csiCtrl.Controller.CreateVolume(w.call(t), createReq("too-big", 2<<30))
			return refused(code(t, "create", err, codes.ResourceExhausted, codes.OutOfRange))
		}},
		{"9b", "expand our volume above maxTotalCapacity", "ResourceExhausted/OutOfRange", func(t *testing.T, w *world) outcome {
			_, err := w.csiCtrl.Controller.ControllerExpandVolume(w.call(t), &csi.ControllerExpandVolumeRequest{
				VolumeId: w.alphaVol, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
			return refused(code(t, "expand", err, codes.ResourceExhausted, codes.OutOfRange))
		}},
		{"9c", "CreateVolume beyond maxVolumes (3)", "ResourceExhausted for the 4th", func(t *testing.T, w *world) outcome {
			names := []string{"quota-1", "quota-2"}
			for _, n := range names {
				id := w.createVolume(t, w.csiCtrl, n, 16*mib)
				t.Cleanup(func() { w.deleteVolume(t, id) })
			}
			_, err := w.csiCtrl.Controller.CreateVolume(w.call(t), createReq("quota-3", 16*mib))
			return refused("2 created, 4th: "+code(t, "create", err, codes.ResourceExhausted), volumeKeys(names...)...)
		}},
	}
}

// deleteVolume deletes alpha's volume id and waits until its DataVolume and claim are gone:
// the next row compares against the state before this one.
func (w *world) deleteVolume(t *testing.T, id string) {
	t.Helper()
	if _, err := w.csiCtrl.Controller.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Errorf("deleting %s: %v", id, err)
	}
	w.eventually(t, "DataVolume and claim "+id+" gone", func() (bool, error) {
		for _, obj := range []client.Object{&cdiv1.DataVolume{}, &corev1.PersistentVolumeClaim{}} {
			if err := w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: id}, obj); !apierrors.IsNotFound(err) {
				return false, client.IgnoreNotFound(err)
			}
		}
		return true, nil
	})
}

func csiMalformedAttacks() []attack {
	return []attack{
		{"10a", "CreateVolume name of 2000 bytes / with NUL", "InvalidArgument", func(t *testing.T, w *world) outcome {
			_, err := w.csiCtrl.Controller.CreateVolume(w.call(t), createReq(strings.Repeat("n", 2000), 16*mib))
			r := code(t, "2000 bytes", err, codes.InvalidArgument)
			_, err = w.csiCtrl.Controller.CreateVolume(w.call(t), createReq("pvc-\x00-x", 16*mib))
			return refused(r + ", " + code(t, "NUL", err, codes.InvalidArgument))
		}},
		{"10b", "node ID of 253 chars / 300 chars / unicode", "NotFound or InvalidArgument", func(t *testing.T, w *world) outcome {
			var res []string
			for _, c := range [][2]string{{"253", long253()}, {"300", strings.Repeat("b", 300)}, {"unicode", "wörker-ü"}} {
				res = append(res, code(t, c[0], w.publish(t, w.alphaVol, c[1]), codes.NotFound, codes.InvalidArgument))
			}
			return refused(strings.Join(res, ", "))
		}},
		{"10c", "volume ID unicode / 253 chars / traversal", "NotFound or InvalidArgument", func(t *testing.T, w *world) outcome {
			var res []string
			for _, c := range [][2]string{{"unicode", "tc-ünïcödé"}, {"253", long253()}, {"traversal", "../../" + otherNS + "/" + w.gammaVol}} {
				res = append(res, code(t, c[0], w.publish(t, c[1], w.alphaVM), codes.NotFound, codes.InvalidArgument))
			}
			return refused(strings.Join(res, ", "))
		}},
		{"10d", "CreateVolume parameters: ungranted class, bad bus, unknown key", "InvalidArgument", func(t *testing.T, w *world) outcome {
			var res []string
			for _, what := range []string{"class", "bus", "unknown"} {
				p := map[string]map[string]string{
					"class":   {controller.ParamInfraStorageClass: "gold-of-another-tenant"},
					"bus":     {controller.ParamBus: "ide"},
					"unknown": {"claimName": w.rootDisk},
				}[what]
				req := createReq("params-"+what, 16*mib)
				req.Parameters = p
				_, err := w.csiCtrl.Controller.CreateVolume(w.call(t), req)
				res = append(res, code(t, what, err, codes.InvalidArgument))
			}
			return refused(strings.Join(res, ", "))
		}},
		{"10e", "CreateSnapshot with an ungranted snapshot class", "InvalidArgument", func(t *testing.T, w *world) outcome {
			_, err := w.csiCtrl.Controller.CreateSnapshot(w.call(t), &csi.CreateSnapshotRequest{Name: "snap-bad-class", SourceVolumeId: w.alphaVol,
				Parameters: map[string]string{controller.ParamInfraSnapshotClass: "someone-elses"}})
			return refused(code(t, "snapshot", err, codes.InvalidArgument))
		}},
		{"10f", "csi-node: targets with .., outside kubelet dir, via symlink", "InvalidArgument, nothing mounted", func(t *testing.T, w *world) outcome {
			vol := w.alphaVol
			pc := map[string]string{tccsi.PublishContextSerial: tccsi.Serial(vol), tccsi.PublishContextBus: tccsi.BusSCSI}
			staging := filepath.Join(w.kubeletDir, "plugins", "staging", "x")
			escape := filepath.Join(w.kubeletDir, "pods", "escape")
			w.must(t, os.MkdirAll(filepath.Dir(escape), 0o750))
			outside := t.TempDir()
			w.must(t, os.Symlink(outside, escape))
			var res []string
			for _, c := range [][2]string{
				{"dotdot", filepath.Join(w.kubeletDir, "pods") + "/../../../etc/evil"},
				{"outside", "/etc/evil"},
				{"symlink", filepath.Join(escape, "mount")},
			} {
				what, target := c[0], c[1]
				_, err := w.node.NodePublishVolume(w.call(t), &csi.NodePublishVolumeRequest{VolumeId: vol, StagingTargetPath: staging,
					TargetPath: target, VolumeCapability: mountCap(), PublishContext: pc})
				res = append(res, code(t, "publish "+what, err, codes.InvalidArgument))
			}
			_, err := w.node.NodeStageVolume(w.call(t), &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: "/tmp/../etc",
				VolumeCapability: mountCap(), PublishContext: pc})
			res = append(res, code(t, "stage outside", err, codes.InvalidArgument))
			_, err = w.node.NodeUnpublishVolume(w.call(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: "/"})
			res = append(res, code(t, "unpublish /", err, codes.InvalidArgument))
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("something was written outside the kubelet dir: %v", entries)
			}
			return refused(strings.Join(res, ", "))
		}},
		{"10g", "csi-node: serial with path traversal / bad bus", "InvalidArgument", func(t *testing.T, w *world) outcome {
			var res []string
			for _, what := range []string{"serial", "bus", "long"} {
				pc := map[string]map[string]string{
					"serial": {tccsi.PublishContextSerial: "../../../dev/sda", tccsi.PublishContextBus: tccsi.BusSCSI},
					"bus":    {tccsi.PublishContextSerial: tccsi.Serial(w.alphaVol), tccsi.PublishContextBus: "../scsi"},
					"long":   {tccsi.PublishContextSerial: strings.Repeat("s", 300), tccsi.PublishContextBus: tccsi.BusVirtio},
				}[what]
				_, err := w.node.NodeStageVolume(w.call(t), &csi.NodeStageVolumeRequest{VolumeId: w.alphaVol,
					StagingTargetPath: filepath.Join(w.kubeletDir, "plugins", "stage-"+what), VolumeCapability: mountCap(), PublishContext: pc})
				res = append(res, code(t, what, err, codes.InvalidArgument))
			}
			return refused(strings.Join(res, ", "))
		}},
	}
}

// craftedNode registers a tenant Node as a hostile admin can (no kubelet needed), with the
// uninitialized taint a real kubelet under an external cloud provider sets, and removes it at
// the end of the test.
func (w *world) craftedNode(t *testing.T, name, providerID string, mut func(*corev1.Node)) *corev1.Node {
	t.Helper()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.NodeSpec{ProviderID: providerID,
			Taints: []corev1.Taint{{Key: uninitializedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
	}
	if mut != nil {
		mut(n)
	}
	w.create(t, w.tenant, n)
	t.Cleanup(func() { _ = w.tenant.Delete(context.Background(), n) })
	return n
}

// long253 is a DNS-1123 subdomain of the maximum length, 253 characters: valid everywhere a
// name is checked for form only, so only the lookup can refuse it.
func long253() string {
	label := strings.Repeat("a", 62)
	return label + "." + label + "." + label + "." + label + "." + strings.Repeat("b", 1)
}

// betaAttached checks that beta's volume is still hot-plugged and Ready in beta's VMI (the
// snapshot diff then proves that nothing about it moved).
func (w *world) betaAttached(t *testing.T) string {
	t.Helper()
	vmi := &kubevirtv1.VirtualMachineInstance{}
	w.must(t, w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: betaVM}, vmi))
	for _, st := range vmi.Status.VolumeStatus {
		if st.Name == w.betaVol {
			if st.Phase != kubevirtv1.VolumeReady {
				t.Errorf("beta's volume is %s in %s", st.Phase, betaVM)
			}
			return "beta's disk " + string(st.Phase)
		}
	}
	t.Errorf("beta's volume is not in %s", betaVM)
	return "beta's disk gone"
}
