package csicontroller_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
)

// declarativeGates switches the simulated KubeVirt to DeclarativeHotplugVolumes alone for
// the rest of the test (the KubeVirt CR is cluster-wide; the package's tests run one at a
// time).
func declarativeGates(t *testing.T) {
	t.Helper()
	needSims(t)
	sims.Gates.Set(featuregate.DeclarativeHotplugVolumes)
	t.Cleanup(func() { sims.Gates.Set(featuregate.HotplugVolumes) })
}

// editTemplate changes the VM's template as an operator would, retrying while the simulated
// KubeVirt's status writes win the race.
func editTemplate(t *testing.T, ns, name string, edit func(*kubevirtv1.VirtualMachineInstanceSpec)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vm := getVM(t, ns, name)
		edit(&vm.Spec.Template.Spec)
		return kube().Update(testCtx(t), vm)
	}); err != nil {
		t.Fatal(err)
	}
}

func declarativeStorage() config.Storage {
	st := fixtureStorage()
	st.Hotplug = config.HotplugDeclarative
	return st
}

// othersThan returns the VM's template volumes and disks other than id's.
func othersThan(vm *kubevirtv1.VirtualMachine, id string) ([]kubevirtv1.Volume, []kubevirtv1.Disk) {
	var vols []kubevirtv1.Volume
	var disks []kubevirtv1.Disk
	for _, v := range vm.Spec.Template.Spec.Volumes {
		if v.Name != id {
			vols = append(vols, v)
		}
	}
	for _, d := range vm.Spec.Template.Spec.Domain.Devices.Disks {
		if d.Name != id {
			disks = append(disks, d)
		}
	}
	return vols, disks
}

// TestDeclarativeHotplugPublishUnpublish: with storage.hotplug=declarative and KubeVirt's
// DeclarativeHotplugVolumes gate, publishing adds exactly one volume and disk to the VM's
// spec (the VM's own hotpluggable volume untouched), KubeVirt's VM controller carries it into
// the running VMI, the status walks to Ready and the disk appears in the guest with its
// serial; a repeat changes nothing; unpublishing removes only that entry and the disk goes.
func TestDeclarativeHotplugPublishUnpublish(t *testing.T) {
	declarativeGates(t)
	tn := newTenant(t, "csi-declarative", "decl", declarativeStorage())
	const vmName = "decl-w1"
	tn.vm(vmName)
	// A hotpluggable volume of the VM's own (an operator's), which must survive everything.
	own := kubevirtv1.Volume{Name: "operator-data", VolumeSource: kubevirtv1.VolumeSource{
		PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{Hotpluggable: true}}}
	own.PersistentVolumeClaim.ClaimName = "operator-data"
	editTemplate(t, tn.ns, vmName, func(spec *kubevirtv1.VirtualMachineInstanceSpec) {
		spec.Volumes = append(spec.Volumes, own)
		spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks,
			kubevirtv1.Disk{Name: "operator-data", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}}})
	})
	vm := getVM(t, tn.ns, vmName)
	ownVols, ownDisks := othersThan(vm, "")

	id := tn.create("pvc-decl-1", 32*mib).GetVolumeId()
	start := time.Now()
	pc := tn.mustPublish(id, vmName, nil)
	t.Logf("declarative publish → Ready in %s", time.Since(start).Round(time.Millisecond))
	if pc[tccsi.PublishContextSerial] != tccsi.Serial(id) || pc[tccsi.PublishContextBus] != tccsi.BusSCSI {
		t.Fatalf("publish context %v", pc)
	}
	vm = getVM(t, tn.ns, vmName)
	vols, disks := othersThan(vm, id)
	if !reflect.DeepEqual(vols, ownVols) || !reflect.DeepEqual(disks, ownDisks) {
		t.Fatalf("the VM's own volumes/disks changed:\n%v\n%v\nwant\n%v\n%v", vols, disks, ownVols, ownDisks)
	}
	var got *kubevirtv1.Volume
	for i, v := range vm.Spec.Template.Spec.Volumes {
		if v.Name == id {
			got = &vm.Spec.Template.Spec.Volumes[i]
		}
	}
	if got == nil || got.DataVolume == nil || got.DataVolume.Name != id || !got.DataVolume.Hotpluggable {
		t.Fatalf("VM spec volume %s = %+v, want a hotpluggable DataVolume source", id, got)
	}
	if !hasDisk(vm.Spec.Template.Spec.Domain.Devices.Disks, id, tccsi.Serial(id)) {
		t.Fatalf("VM spec lacks disk %s with serial %s", id, tccsi.Serial(id))
	}
	vmi := getVMI(t, tn.ns, vmName)
	if !specHasVolume(&vmi.Spec, id) || !hasVolumePhase(vmi, id, kubevirtv1.VolumeReady) {
		t.Fatalf("VMI spec/status lacks %s Ready: %+v", id, vmi.Status.VolumeStatus)
	}
	// The operator's volume was carried into the VMI as well: KubeVirt hot-plugs every
	// hotpluggable template volume, and csi-controller left it alone.
	if !specHasVolume(&vmi.Spec, "operator-data") {
		t.Fatalf("VMI lacks the VM's own hotpluggable volume")
	}
	link := filepath.Join(sims.Disks.DeviceDir(tn.ns, vmName), "scsi-0QEMU_QEMU_HARDDISK_"+tccsi.Serial(id))
	if _, err := filepath.EvalSymlinks(link); err != nil {
		t.Fatalf("guest disk link %s: %v", link, err)
	}

	// A repeated publish writes nothing (the spec's generation stays).
	gen := vm.Generation
	tn.mustPublish(id, vmName, nil)
	if g := getVM(t, tn.ns, vmName).Generation; g != gen {
		t.Fatalf("repeated publish changed the VM spec: generation %d → %d", gen, g)
	}

	if err := tn.unpublish(id, vmName); err != nil {
		t.Fatal(err)
	}
	vm = getVM(t, tn.ns, vmName)
	if vmHasVolume(vm, id) || hasDisk(vm.Spec.Template.Spec.Domain.Devices.Disks, id, tccsi.Serial(id)) {
		t.Fatalf("VM spec still has %s after unpublish", id)
	}
	vols, disks = othersThan(vm, id)
	if !reflect.DeepEqual(vols, ownVols) || !reflect.DeepEqual(disks, ownDisks) {
		t.Fatalf("unpublish changed the VM's own volumes/disks:\n%v\n%v", vols, disks)
	}
	if vmi := getVMI(t, tn.ns, vmName); hasVolume(vmi, id) {
		t.Fatalf("VMI still has %s after unpublish: %+v", id, vmi.Status.VolumeStatus)
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Fatalf("guest disk link still there after unpublish: %v", err)
	}
	// Unpublishing again is a no-op.
	if err := tn.unpublish(id, vmName); err != nil {
		t.Fatalf("repeated unpublish: %v", err)
	}
	// Published again after the unplug finished: the same volume comes back.
	tn.mustPublish(id, vmName, nil)
	if err := tn.unpublish(id, vmName); err != nil {
		t.Fatal(err)
	}
}

func hasVolumePhase(vmi *kubevirtv1.VirtualMachineInstance, id string, phase kubevirtv1.VolumePhase) bool {
	for _, st := range vmi.Status.VolumeStatus {
		if st.Name == id && st.Phase == phase {
			return true
		}
	}
	return false
}

// TestDeclarativeHotplugConflict: the VM spec patch is guarded by the resourceVersion read,
// so a VM changed since (CAPK, an operator, KubeVirt) gets a 409 from the real apiserver and
// nothing is written.
func TestDeclarativeHotplugConflict(t *testing.T) {
	needSims(t)
	ctx := testCtx(t)
	const ns, cluster, vmName = "csi-decl-conflict", "declconf", "declconf-w1"
	if err := createNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := createRunningVM(ctx, ns, cluster, vmName); err != nil {
		t.Fatal(err)
	}
	ic, err := infra.NewWithReader(infra.Scope{Namespace: ns, ClusterName: cluster}, kube(), kube())
	if err != nil {
		t.Fatal(err)
	}
	stale := getVM(t, ns, vmName)
	// Another writer changes the VM (the simulated KubeVirt writes its status too).
	touch := func(value string) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			fresh := getVM(t, ns, vmName)
			fresh.Labels["example.com/touched"] = value
			return kube().Update(ctx, fresh)
		}); err != nil {
			t.Fatal(err)
		}
	}
	touch("yes")
	vol := kubevirtv1.Volume{Name: "pvc-x", VolumeSource: kubevirtv1.VolumeSource{DataVolume: &kubevirtv1.DataVolumeSource{Name: "pvc-x", Hotpluggable: true}}}
	disk := kubevirtv1.Disk{Name: "pvc-x", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusSCSI}}}
	if err := ic.AddTemplateVolume(ctx, stale, vol, disk); !apierrors.IsConflict(err) {
		t.Fatalf("patch on a stale VM: %v, want 409 Conflict", err)
	}
	if vmHasVolume(getVM(t, ns, vmName), "pvc-x") {
		t.Fatal("the stale patch was applied")
	}
	// On the current version it applies (retried only while KubeVirt's status writes race it).
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		return ic.AddTemplateVolume(ctx, getVM(t, ns, vmName), vol, disk)
	}); err != nil {
		t.Fatalf("patch on the current VM: %v", err)
	}
	if !vmHasVolume(getVM(t, ns, vmName), "pvc-x") {
		t.Fatal("the current patch was not applied")
	}
	staleWithX := getVM(t, ns, vmName)
	touch("again")
	if err := ic.RemoveTemplateVolume(ctx, staleWithX, "pvc-x"); !apierrors.IsConflict(err) {
		t.Fatalf("removal on a stale VM: %v, want 409 Conflict", err)
	}
	if !vmHasVolume(getVM(t, ns, vmName), "pvc-x") {
		t.Fatal("the stale removal was applied")
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		return ic.RemoveTemplateVolume(ctx, getVM(t, ns, vmName), "pvc-x")
	}); err != nil {
		t.Fatal(err)
	}
	if vmHasVolume(getVM(t, ns, vmName), "pvc-x") {
		t.Fatal("removal not applied")
	}
}

// TestDeclarativeHotplugForeignVolume: a VM volume named like a volume ID that csi-controller
// did not add (another source, not hotpluggable) is refused for publish and unpublish and left
// exactly as it is.
func TestDeclarativeHotplugForeignVolume(t *testing.T) {
	declarativeGates(t)
	tn := newTenant(t, "csi-decl-foreign", "declforeign", declarativeStorage())
	const vmName = "declforeign-w1"
	tn.vm(vmName)
	id := tn.create("pvc-foreign", 16*mib).GetVolumeId()
	foreign := kubevirtv1.Volume{Name: id, VolumeSource: kubevirtv1.VolumeSource{
		PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{}}}
	foreign.PersistentVolumeClaim.ClaimName = "someone-elses"
	editTemplate(t, tn.ns, vmName, func(spec *kubevirtv1.VirtualMachineInstanceSpec) {
		spec.Volumes = append(spec.Volumes, foreign)
		spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, kubevirtv1.Disk{Name: id})
	})
	before := getVM(t, tn.ns, vmName)
	// Even if the controller's cache has not seen the change yet, its patch carries the
	// version it read, loses against the change and is retried on the newer VM.
	_, err := tn.publish(id, vmName, nil)
	wantCode(t, "publish over a foreign volume of that name", err, codes.FailedPrecondition, "did not add")
	wantCode(t, "unpublish of a foreign volume of that name", tn.unpublish(id, vmName), codes.FailedPrecondition, "did not add")
	after := getVM(t, tn.ns, vmName)
	if after.Generation != before.Generation || !reflect.DeepEqual(after.Spec, before.Spec) {
		t.Fatalf("the refused calls changed the VM spec")
	}
}

// TestDeclarativeHotplugGateOff: with the gates KubeVirt ships by default (HotplugVolumes on,
// which takes precedence) a VM spec change is accepted and ignored for the running VMI, as
// upstream: publish ends DEADLINE_EXCEEDED saying which gate is needed, and unpublish still
// removes the spec entry.
func TestDeclarativeHotplugGateOff(t *testing.T) {
	needSims(t)
	sims.Gates.Set(featuregate.HotplugVolumes, featuregate.DeclarativeHotplugVolumes)
	t.Cleanup(func() { sims.Gates.Set(featuregate.HotplugVolumes) })
	tn := newTenant(t, "csi-decl-gateoff", "declgate", declarativeStorage())
	const vmName = "declgate-w1"
	tn.vm(vmName)
	id := tn.create("pvc-gate", 16*mib).GetVolumeId()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := tn.cc().ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: vmName, VolumeCapability: rwo})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("publish while KubeVirt ignores VM spec changes: %v, want DeadlineExceeded", err)
	}
	// The CO only sees its own deadline; the operator reads why on the DataVolume.
	eventually(t, "PublishTimeout Warning naming the gate", func(ctx context.Context) (bool, error) {
		var evs eventsv1.EventList
		if err := kube().List(ctx, &evs, client.InNamespace(tn.ns)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "PublishTimeout" && e.Regarding.Name == id && e.Type == corev1.EventTypeWarning &&
				strings.Contains(e.Note, "not yet in the running instance") && strings.Contains(e.Note, "DeclarativeHotplugVolumes") {
				return true, nil
			}
		}
		return false, nil
	})
	if !vmHasVolume(getVM(t, tn.ns, vmName), id) {
		t.Fatal("the VM spec lacks the volume the publish added")
	}
	if vmi := getVMI(t, tn.ns, vmName); hasVolume(vmi, id) {
		t.Fatal("KubeVirt hot-plugged a VM spec change although HotplugVolumes is on")
	}
	if err := tn.unpublish(id, vmName); err != nil {
		t.Fatal(err)
	}
	if vmHasVolume(getVM(t, tn.ns, vmName), id) {
		t.Fatal("unpublish left the spec entry")
	}
}

// TestDeclarativeHotplugModeSwitch: a volume published through the subresources is
// unpublished declaratively after the operator switched KubeVirt's gates and the config (both
// modes put the same entry into the VM spec).
func TestDeclarativeHotplugModeSwitch(t *testing.T) {
	tn := newTenant(t, "csi-decl-switch", "declswitch", fixtureStorage())
	const vmName = "declswitch-w1"
	tn.vm(vmName)
	id := tn.create("pvc-switch", 16*mib).GetVolumeId()
	tn.mustPublish(id, vmName, nil)
	tn.stop()
	declarativeGates(t)
	tn.storage = declarativeStorage()
	tn.start()
	if err := tn.unpublish(id, vmName); err != nil {
		t.Fatal(err)
	}
	if vm := getVM(t, tn.ns, vmName); vmHasVolume(vm, id) {
		t.Fatal("VM spec still has the volume")
	}
	if vmi := getVMI(t, tn.ns, vmName); hasVolume(vmi, id) {
		t.Fatalf("VMI still has the volume: %+v", vmi.Status.VolumeStatus)
	}
}
