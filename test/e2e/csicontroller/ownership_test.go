package csicontroller_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
)

// TestOwnershipRefusals attacks invariant 3 of DESIGN.md §2 (a volume handle resolves only to a
// DataVolume this tenant's csi-controller created) and invariant 2 (a node ID resolves only to
// a VM of this cluster) through every handle-taking RPC. Two tenants share one infra namespace,
// which is the hardest case: their objects are in the same namespace and differ only in the
// cluster name. Every refusal must leave every infra object as it was.
func TestOwnershipRefusals(t *testing.T) {
	const ns = "csi-owner"
	alpha := newTenant(t, ns, "alpha", fixtureStorage())
	beta := newTenant(t, ns, "beta", fixtureStorage())
	ctx := testCtx(t)

	// alpha-w1 boots from a DataVolume root disk, as CAPK's dataVolumeTemplates make it:
	// cluster-labelled, but not created by tenantcloud.
	rootDisk := createRootDisk(t, ns, "alpha", "alpha-w1-rootdisk")
	if err := fixture.CreateRunningVM(ctx, kube(), ns, "alpha", "alpha-w1", rootDisk.Name); err != nil {
		t.Fatal(err)
	}
	alpha.vm("alpha-w2")
	beta.vm("beta-w1")

	// beta's volume, published to beta's VM by beta's own controller.
	betaVol := beta.create("pvc-beta-data", 16*mib).GetVolumeId()
	beta.mustPublish(betaVol, "beta-w1", nil)
	betaSnap, err := beta.cc().CreateSnapshot(callCtx(t), &csi.CreateSnapshotRequest{Name: "snap-beta", SourceVolumeId: betaVol})
	if err != nil {
		t.Fatal(err)
	}
	// A DataVolume that looks like one of alpha's volumes in every label and annotation but
	// whose name is not VolumeID of the CSI name it claims (forged or copied labels).
	lookalike := createLookalike(t, ns, "alpha")
	// alpha's own volume.
	alphaVol := alpha.create("pvc-alpha-data", 16*mib).GetVolumeId()

	before := snapshotWorld(t, ns)

	foreignHandles := map[string]string{
		"another cluster's volume": betaVol,
		"a VM root disk":           rootDisk.Name,
		"a look-alike DataVolume":  lookalike,
		"path traversal":           "../" + rootDisk.Name,
		"another namespace":        "kube-system/" + rootDisk.Name,
	}
	for what, h := range foreignHandles {
		t.Run("handle is "+what, func(t *testing.T) {
			_, err := alpha.publish(h, "alpha-w2", nil)
			wantCode(t, "ControllerPublishVolume", err, codes.NotFound, "not found")
			_, err = alpha.cc().ValidateVolumeCapabilities(callCtx(t), &csi.ValidateVolumeCapabilitiesRequest{
				VolumeId: h, VolumeCapabilities: []*csi.VolumeCapability{rwo}})
			wantCode(t, "ValidateVolumeCapabilities", err, codes.NotFound)
			_, err = alpha.cc().ControllerGetVolume(callCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: h})
			wantCode(t, "ControllerGetVolume", err, codes.NotFound)
			_, err = alpha.cc().ControllerGetVolumeHealth(callCtx(t), &csi.ControllerGetVolumeHealthRequest{VolumeId: h})
			wantCode(t, "ControllerGetVolumeHealth", err, codes.NotFound)
			_, err = alpha.cc().ControllerExpandVolume(callCtx(t), &csi.ControllerExpandVolumeRequest{
				VolumeId: h, CapacityRange: &csi.CapacityRange{RequiredBytes: 512 * mib}})
			wantCode(t, "ControllerExpandVolume", err, codes.NotFound)
			_, err = alpha.cc().CreateSnapshot(callCtx(t), &csi.CreateSnapshotRequest{Name: "steal-" + what, SourceVolumeId: h})
			wantCode(t, "CreateSnapshot of it", err, codes.NotFound)
			req := createReq("clone-of-"+what, 16*mib)
			req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: h}}}
			_, err = alpha.cc().CreateVolume(callCtx(t), req)
			wantCode(t, "CreateVolume cloning it", err, codes.NotFound)
			// Deleting something that is not ours: as far as the tenant can tell it does not
			// exist, which CSI answers with OK; nothing is deleted.
			if err := alpha.delete(h); err != nil {
				t.Fatalf("DeleteVolume: %v", err)
			}
			list, err := alpha.cc().ListSnapshots(callCtx(t), &csi.ListSnapshotsRequest{SourceVolumeId: h})
			if err != nil || len(list.GetEntries()) != 0 {
				t.Fatalf("ListSnapshots by foreign source = %v, %v", list, err)
			}
		})
	}

	t.Run("unpublish of a volume we do not own", func(t *testing.T) {
		// Visible to alpha (same cluster label) but not alpha's volume: refused.
		wantCode(t, "unpublish look-alike", alpha.unpublish(lookalike, "alpha-w1"), codes.NotFound)
		wantCode(t, "unpublish root disk", alpha.unpublish(rootDisk.Name, "alpha-w1"), codes.NotFound)
		wantCode(t, "unpublish root disk from all nodes", alpha.unpublish(rootDisk.Name, ""), codes.NotFound)
		// Another cluster's volume is invisible to alpha: CSI's "cannot be found and can be
		// regarded as unpublished" answer is OK, and beta's VM keeps its disk.
		if err := alpha.unpublish(betaVol, "beta-w1"); err != nil {
			t.Fatalf("unpublish of beta's volume from beta's VM through alpha: %v", err)
		}
		if err := alpha.unpublish(betaVol, ""); err != nil {
			t.Fatalf("unpublish of beta's volume from all nodes through alpha: %v", err)
		}
	})

	t.Run("node ID is a VM of another cluster", func(t *testing.T) {
		for _, node := range []string{"beta-w1", "kubevirt://beta-w1", "../beta-w1", ns + "/beta-w1", "no-such-vm"} {
			_, err := alpha.publish(alphaVol, node, nil)
			wantCode(t, "publish to "+node, err, codes.NotFound, "not found")
		}
		// Unpublishing from a VM alpha cannot see changes nothing and is OK (nothing to do).
		if err := alpha.unpublish(alphaVol, "beta-w1"); err != nil {
			t.Fatalf("unpublish from beta-w1: %v", err)
		}
	})

	t.Run("snapshot handles of another cluster", func(t *testing.T) {
		snapID := betaSnap.GetSnapshot().GetSnapshotId()
		req := createReq("restore-beta", 16*mib)
		req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapID}}}
		_, err := alpha.cc().CreateVolume(callCtx(t), req)
		wantCode(t, "restore from beta's snapshot", err, codes.NotFound)
		_, err = alpha.cc().GetSnapshot(callCtx(t), &csi.GetSnapshotRequest{SnapshotId: snapID})
		wantCode(t, "GetSnapshot", err, codes.NotFound)
		if _, err := alpha.cc().DeleteSnapshot(callCtx(t), &csi.DeleteSnapshotRequest{SnapshotId: snapID}); err != nil {
			t.Fatalf("DeleteSnapshot of beta's snapshot: %v", err)
		}
		list, err := alpha.cc().ListSnapshots(callCtx(t), &csi.ListSnapshotsRequest{})
		if err != nil || len(list.GetEntries()) != 0 {
			t.Fatalf("alpha lists snapshots %v, %v", list, err)
		}
		vols, err := alpha.cc().ListVolumes(callCtx(t), &csi.ListVolumesRequest{})
		if err != nil || len(vols.GetEntries()) != 1 || vols.GetEntries()[0].GetVolume().GetVolumeId() != alphaVol {
			t.Fatalf("alpha lists volumes %v, %v; want only %s", vols, err, alphaVol)
		}
	})

	// Nothing of the above changed any infra object.
	if after := snapshotWorld(t, ns); !reflect.DeepEqual(before, after) {
		t.Fatalf("infra objects changed by refused calls:\nbefore %v\nafter  %v", before, after)
	}

	t.Run("publish context cannot be steered by the tenant", func(t *testing.T) {
		// volume_context is tenant-writable (PV spec.csi.volumeAttributes): it must not pick
		// the claim, the bus or the serial.
		rsp, err := alpha.cc().ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{
			VolumeId: alphaVol, NodeId: "alpha-w2", VolumeCapability: rwo,
			VolumeContext: map[string]string{"claimName": rootDisk.Name, "dataVolume": rootDisk.Name, "bus": "sata", "serial": "x"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if rsp.GetPublishContext()[tccsi.PublishContextSerial] != tccsi.Serial(alphaVol) || rsp.GetPublishContext()[tccsi.PublishContextBus] != tccsi.BusSCSI {
			t.Fatalf("publish context %v", rsp.GetPublishContext())
		}
		for _, v := range getVM(t, ns, "alpha-w2").Spec.Template.Spec.Volumes {
			if v.DataVolume != nil && v.DataVolume.Name == rootDisk.Name {
				t.Fatalf("root disk hot-plugged into alpha-w2: %+v", v)
			}
		}
		if err := alpha.unpublish(alphaVol, "alpha-w2"); err != nil {
			t.Fatal(err)
		}
	})
}

// createRootDisk creates a VM boot DataVolume as CAPK would (cluster label, no tenantcloud
// marks) and waits for it to be populated.
func createRootDisk(t *testing.T, ns, cluster, name string) *cdiv1.DataVolume {
	t.Helper()
	class, mode := fixture.RootDiskStorageClass, corev1.PersistentVolumeBlock
	dv := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{infra.LabelClusterName: cluster}},
		Spec: cdiv1.DataVolumeSpec{
			Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			Storage: &cdiv1.StorageSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeMode: &mode, StorageClassName: &class,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
			},
		},
	}
	if err := kube().Create(testCtx(t), dv); err != nil {
		t.Fatal(err)
	}
	eventually(t, "root disk populated", func(ctx context.Context) (bool, error) {
		err := kube().Get(ctx, client.ObjectKeyFromObject(dv), dv)
		return dv.Status.Phase == cdiv1.Succeeded, err
	})
	return dv
}

// createLookalike creates a DataVolume with every mark of an alpha csi-controller volume, but
// named VolumeID of another CSI name than the one it is annotated with.
func createLookalike(t *testing.T, ns, cluster string) string {
	t.Helper()
	scope := infra.Scope{Namespace: ns, ClusterName: cluster}
	name := controller.VolumeID(cluster, "the-real-name")
	ann := scope.OwnedAnnotations()
	ann[controller.AnnVolumeName] = "a-forged-name"
	ann[controller.AnnCapacity] = "16777216"
	class, mode := fixture.StorageClass, corev1.PersistentVolumeBlock
	dv := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: scope.OwnedLabels(controller.Component), Annotations: ann},
		Spec: cdiv1.DataVolumeSpec{
			Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			Storage: &cdiv1.StorageSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeMode: &mode, StorageClassName: &class,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
			},
		},
	}
	if err := kube().Create(testCtx(t), dv); err != nil {
		t.Fatal(err)
	}
	eventually(t, "look-alike populated", func(ctx context.Context) (bool, error) {
		err := kube().Get(ctx, client.ObjectKeyFromObject(dv), dv)
		return dv.Status.Phase == cdiv1.Succeeded, err
	})
	return name
}

// worldState is what a refused call must not change: every DataVolume (spec, labels,
// annotations, deletion), every VM's hot-plugged volumes and every VMI's volume status.
type worldState map[string]any

func snapshotWorld(t *testing.T, ns string) worldState {
	t.Helper()
	w := worldState{}
	for _, dv := range dataVolumes(t, ns) {
		w["dv/"+dv.Name] = []any{dv.UID, dv.Spec, dv.Labels, dv.Annotations, dv.DeletionTimestamp}
	}
	var vms kubevirtv1.VirtualMachineList
	if err := kube().List(testCtx(t), &vms, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms.Items {
		w["vm/"+vm.Name] = []any{vm.Spec.Template.Spec.Volumes, vm.Spec.Template.Spec.Domain.Devices.Disks}
	}
	var vmis kubevirtv1.VirtualMachineInstanceList
	if err := kube().List(testCtx(t), &vmis, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, vmi := range vmis.Items {
		var phases []string
		for _, st := range vmi.Status.VolumeStatus {
			phases = append(phases, st.Name+"="+string(st.Phase))
		}
		w["vmi/"+vmi.Name] = []any{vmi.Spec.Volumes, phases}
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := kube().List(testCtx(t), &pvcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, pvc := range pvcs.Items {
		w["pvc/"+pvc.Name] = []any{pvc.UID, pvc.Spec.Resources, pvc.DeletionTimestamp}
	}
	return w
}
