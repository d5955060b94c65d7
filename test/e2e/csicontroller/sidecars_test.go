package csicontroller_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// sidecarWait bounds each step the sidecars carry out (a DataVolume's simulated phases, a
// hot-plug, the binder's and the sidecars' informer round trips) on a loaded 2-core machine.
const sidecarWait = 90 * time.Second

// TestUpstreamSidecars runs the real csi-provisioner, csi-attacher, csi-resizer and
// csi-snapshotter (hack/bin-sidecars.sh) against the tenant apiserver with the chart's flags,
// pointed at the controller's socket, next to the tenant's real snapshot-controller and PV
// binder and protection controllers (kube-controller-manager): a PVC of a csi.tenantcloud.io
// StorageClass is provisioned and bound, its expansion reaches the PV, a VolumeAttachment
// hot-plugs it into the VM and its removal unplugs it, a VolumeSnapshot of it becomes ready and
// its deletion deletes the content, and deleting the claim deletes the DataVolume. The chart's
// exact args are checked against these binaries by test/e2e/deploy.
func TestUpstreamSidecars(t *testing.T) {
	provisioner := harness.Bin(t, "csi-provisioner", "hack/bin-sidecars.sh")
	attacher := harness.Bin(t, "csi-attacher", "hack/bin-sidecars.sh")
	resizer := harness.Bin(t, "csi-resizer", "hack/bin-sidecars.sh")
	snapshotter := harness.Bin(t, "csi-snapshotter", "hack/bin-sidecars.sh")
	snapshotController := harness.Bin(t, "snapshot-controller", "hack/bin-sidecars.sh")
	tn := newTenant(t, "csi-sidecars", "sidecars", fixtureStorage())
	// Every step below is bounded by sidecarWait; this bounds the whole walk.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	t.Cleanup(cancel)
	const vm = "sidecars-w1"
	tn.vm(vm)

	// Env.Stop stops it; the test only shows its log.
	kcm, err := env.StartControllerManager(ctx, env.Tenant,
		"persistentvolume-binder-controller", "persistentvolume-protection-controller", "persistentvolumeclaim-protection-controller")
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-controller-manager log (tail):\n%s", kcm.Log(3000))
		}
	})
	socket := strings.TrimPrefix(tn.ctrl.Endpoint, "unix://")
	dir := t.TempDir()
	start := func(name, bin string, extra ...string) {
		t.Helper()
		// As deploy/charts/tenantcloud/templates/csi-controller.yaml renders them.
		args := append([]string{
			"--csi-address=" + socket,
			"--kubeconfig=" + env.Tenant.Kubeconfig,
			"--leader-election",
			"--leader-election-namespace=kube-system",
			"--timeout=2m",
			"--v=4",
		}, extra...)
		p, err := harness.StartBinary(name, bin, filepath.Join(dir, name+".log"), args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopLogged(t, p) })
	}
	start("csi-provisioner", provisioner, "--extra-create-metadata=true", "--default-fstype=ext4")
	start("csi-attacher", attacher)
	start("csi-resizer", resizer, "--handle-volume-inuse-error=false")
	start("csi-snapshotter", snapshotter)
	// The tenant's own snapshot-controller (not a sidecar: one per cluster, no CSI socket).
	snapCtl, err := harness.StartBinary("snapshot-controller", snapshotController, filepath.Join(dir, "snapshot-controller.log"),
		"--kubeconfig="+env.Tenant.Kubeconfig, "--leader-election", "--leader-election-namespace=kube-system", "--v=4")
	must(t, err)
	t.Cleanup(func() { stopLogged(t, snapCtl) })

	tc := env.Tenant.Client
	sc := &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: "tenantcloud-sidecars"},
		Provisioner:          tccsi.DriverName,
		ReclaimPolicy:        ptr.To(corev1.PersistentVolumeReclaimDelete),
		AllowVolumeExpansion: ptr.To(true),
		VolumeBindingMode:    ptr.To(storagev1.VolumeBindingImmediate),
	}
	must(t, tc.Create(ctx, sc))
	t.Cleanup(func() { _ = tc.Delete(context.Background(), sc) })
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "sidecars-claim"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &sc.Name,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}
	must(t, tc.Create(ctx, pvc))

	// Provisioned: the PV controller bound the claim to the provisioner's PV, whose handle is a
	// DataVolume of this tenant that names the claim (--extra-create-metadata).
	harness.Eventually(t, ctx, sidecarWait, "the claim bound", func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(pvc), pvc)
		return pvc.Status.Phase == corev1.ClaimBound, err
	})
	pv := &corev1.PersistentVolume{}
	must(t, tc.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv))
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != tccsi.DriverName || pv.Spec.CSI.VolumeHandle == "" || pv.Spec.CSI.FSType != "ext4" {
		t.Fatalf("PV %s has CSI source %+v, want driver %s, a handle and fstype ext4", pv.Name, pv.Spec.CSI, tccsi.DriverName)
	}
	var dvName string
	for _, dv := range dataVolumes(t, tn.ns) {
		if dv.Annotations[controller.AnnTenantClaim] == "default/"+pvc.Name {
			dvName = dv.Name
		}
	}
	if dvName == "" {
		t.Fatalf("no DataVolume in %s is annotated %s=default/%s", tn.ns, controller.AnnTenantClaim, pvc.Name)
	}
	t.Logf("provisioned: PV %s, handle %s, DataVolume %s/%s", pv.Name, pv.Spec.CSI.VolumeHandle, tn.ns, dvName)

	// Expanded: csi-resizer expands through the controller and records the new size on the PV;
	// the file system's share is the kubelet's (no kubelet here).
	want := resource.MustParse("128Mi")
	before := pv.Spec.Capacity.Storage().DeepCopy()
	if before.Cmp(want) >= 0 {
		t.Fatalf("PV %s was provisioned with %s, not below the %s it is grown to", pv.Name, before.String(), want.String())
	}
	must(t, retryUpdate(ctx, tc, pvc, func() { pvc.Spec.Resources.Requests[corev1.ResourceStorage] = want }))
	harness.Eventually(t, ctx, sidecarWait, "the PV expanded to "+want.String(), func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(pv), pv)
		return pv.Spec.Capacity.Storage().Cmp(want) >= 0, err
	})
	t.Logf("expanded: PV %s from %s to %s", pv.Name, before.String(), pv.Spec.Capacity.Storage().String())

	// Attached: the attacher resolves the node ID from CSINode (node-driver-registrar writes it
	// on a real node), publishes, and records the publish context; the VM carries the disk.
	must(t, tc.Create(ctx, &storagev1.CSINode{
		ObjectMeta: metav1.ObjectMeta{Name: vm},
		Spec:       storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: tccsi.DriverName, NodeID: vm}}},
	}))
	va := &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "sidecars-attachment"},
		Spec: storagev1.VolumeAttachmentSpec{
			Attacher: tccsi.DriverName, NodeName: vm,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv.Name},
		},
	}
	must(t, tc.Create(ctx, va))
	harness.Eventually(t, ctx, sidecarWait, "the VolumeAttachment attached", func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(va), va)
		return va.Status.Attached, err
	})
	serial := va.Status.AttachmentMetadata[tccsi.PublishContextSerial]
	if serial == "" || !vmHasSerial(t, tn.ns, vm, serial) {
		t.Fatalf("attached with metadata %v, but VM %s has no disk with that serial", va.Status.AttachmentMetadata, vm)
	}

	t.Logf("attached: VolumeAttachment %s, disk serial %s on VM %s", va.Name, serial, vm)

	// Detached: deleting the VolumeAttachment unpublishes before the attacher lets it go.
	must(t, tc.Delete(ctx, va))
	harness.Eventually(t, ctx, sidecarWait, "the VolumeAttachment gone", func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(va), va)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if vmHasSerial(t, tn.ns, vm, serial) {
		t.Errorf("VM %s still has disk %s after the VolumeAttachment was deleted", vm, serial)
	}

	// Snapshotted: the snapshot-controller makes the content, csi-snapshotter cuts it through the
	// controller; deleting the snapshot (deletionPolicy Delete) deletes both.
	vsc := snapshotObject("VolumeSnapshotClass", "", "tenantcloud-sidecars")
	vsc.Object["driver"] = tccsi.DriverName
	vsc.Object["deletionPolicy"] = "Delete"
	must(t, tc.Create(ctx, vsc))
	t.Cleanup(func() { _ = tc.Delete(context.Background(), vsc) })
	vs := snapshotObject("VolumeSnapshot", "default", "sidecars-snapshot")
	vs.Object["spec"] = map[string]any{
		"volumeSnapshotClassName": vsc.GetName(),
		"source":                  map[string]any{"persistentVolumeClaimName": pvc.Name},
	}
	must(t, tc.Create(ctx, vs))
	harness.Eventually(t, ctx, sidecarWait, "the VolumeSnapshot ready", func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(vs), vs)
		ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse")
		return ready, err
	})
	contentName, _, _ := unstructured.NestedString(vs.Object, "status", "boundVolumeSnapshotContentName")
	content := snapshotObject("VolumeSnapshotContent", "", contentName)
	must(t, tc.Get(ctx, client.ObjectKeyFromObject(content), content))
	handle, _, _ := unstructured.NestedString(content.Object, "status", "snapshotHandle")
	if handle == "" {
		t.Fatalf("VolumeSnapshotContent %s has no snapshot handle: %v", contentName, content.Object["status"])
	}
	t.Logf("snapshotted: VolumeSnapshotContent %s, handle %s", contentName, handle)
	must(t, tc.Delete(ctx, vs))
	harness.Eventually(t, ctx, sidecarWait, "the VolumeSnapshotContent gone", func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(content), content)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})

	// Deleted: the released PV (reclaim Delete) is deleted by the provisioner, which deletes the
	// DataVolume.
	must(t, tc.Delete(ctx, pvc))
	harness.Eventually(t, ctx, sidecarWait, "the PV gone", func(ctx context.Context) (bool, error) {
		err := tc.Get(ctx, client.ObjectKeyFromObject(pv), pv)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	for _, dv := range dataVolumes(t, tn.ns) {
		if dv.Name == dvName && dv.DeletionTimestamp == nil {
			t.Errorf("DataVolume %s/%s survived its PV", tn.ns, dvName)
		}
	}
}

// retryUpdate applies mutate to the latest obj and updates it, again on a conflict (the
// sidecars and the binder write the same objects).
func retryUpdate(ctx context.Context, c client.Client, obj client.Object, mutate func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return c.Update(ctx, obj)
	})
}

// snapshotObject is an empty snapshot.storage.k8s.io/v1 object (the product does not link the
// snapshot client types).
func snapshotObject(kind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("snapshot.storage.k8s.io/v1")
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// stopLogged stops p, and prints the tail of its log if the test failed.
func stopLogged(t *testing.T, p *harness.Process) {
	if err := p.Stop(); err != nil {
		t.Error(err)
	}
	if t.Failed() {
		t.Logf("%s log (tail):\n%s", p.Name, p.Log(6000))
	}
}

// vmHasSerial reports whether the VM's template has a disk with serial.
func vmHasSerial(t *testing.T, ns, name, serial string) bool {
	t.Helper()
	for _, d := range getVM(t, ns, name).Spec.Template.Spec.Domain.Devices.Disks {
		if d.Serial == serial {
			return true
		}
	}
	return false
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
