package virtapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

func TestDiscoveryThroughAggregator(t *testing.T) {
	server(t)
	dc, err := discovery.NewDiscoveryClientForConfig(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	list, err := dc.ServerResourcesForGroupVersion(GroupVersion)
	if err != nil {
		t.Fatalf("discovering %s through kube-apiserver: %v", GroupVersion, err)
	}
	got := map[string]bool{}
	for _, r := range list.APIResources {
		got[r.Name] = r.Namespaced
	}
	for _, want := range []string{"virtualmachines/addvolume", "virtualmachines/removevolume", "virtualmachineinstances/addvolume", "virtualmachineinstances/removevolume"} {
		if !got[want] {
			t.Errorf("discovery lacks namespaced %s: %v", want, list.APIResources)
		}
	}
	groups, err := dc.ServerGroups()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range groups.Groups {
		found = found || g.Name == Group
	}
	if !found {
		t.Fatalf("kube-apiserver does not list group %s", Group)
	}
}

func TestVMAddVolumeUpdatesVMAndRunningVMI(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	createPVC(t, ns, "pvc-data")
	kv := kubevirtClient(t, env.Management.Config)
	ctx := ctxT(t)

	opts := pvcOptions("data", "pvc-data", "tc-0123456789abcdef", kubevirtv1.DiskBusSCSI)
	if err := kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctx, "vm-1", opts); err != nil {
		t.Fatalf("AddVolume: %v", err)
	}
	for what, spec := range map[string]kubevirtv1.VirtualMachineInstanceSpec{
		"VM template": getVM(t, ns, "vm-1").Spec.Template.Spec,
		"VMI":         getVMI(t, ns, "vm-1").Spec,
	} {
		vol, disk := findVolume(spec, "data")
		if vol == nil || vol.PersistentVolumeClaim == nil || vol.PersistentVolumeClaim.ClaimName != "pvc-data" || !vol.PersistentVolumeClaim.Hotpluggable {
			t.Fatalf("%s volume = %+v, want hotpluggable PVC pvc-data", what, vol)
		}
		if disk == nil || disk.Serial != "tc-0123456789abcdef" || disk.Disk == nil || disk.Disk.Bus != kubevirtv1.DiskBusSCSI {
			t.Fatalf("%s disk = %+v, want scsi disk with the serial kept", what, disk)
		}
		if v, _ := findVolume(spec, "rootdisk"); v == nil {
			t.Fatalf("%s lost its root disk", what)
		}
	}

	// The same name again: 409 naming the volume, as upstream.
	err := kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("data", "pvc-other", "x", kubevirtv1.DiskBusSCSI))
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "[data]") {
		t.Fatalf("duplicate AddVolume: want Conflict naming [data], got %v", err)
	}

	if err := kv.KubevirtV1().VirtualMachines(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "data"}); err != nil {
		t.Fatalf("RemoveVolume: %v", err)
	}
	for what, spec := range map[string]kubevirtv1.VirtualMachineInstanceSpec{
		"VM template": getVM(t, ns, "vm-1").Spec.Template.Spec,
		"VMI":         getVMI(t, ns, "vm-1").Spec,
	} {
		if vol, disk := findVolume(spec, "data"); vol != nil || disk != nil {
			t.Fatalf("%s still has the volume after RemoveVolume: %+v %+v", what, vol, disk)
		}
	}
	err = kv.KubevirtV1().VirtualMachines(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "data"})
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("removing an absent volume: want Conflict 'does not exist', got %v", err)
	}
}

func TestVMAddVolumeWithoutVMIChangesOnlyTheTemplate(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "stopped", false)
	kv := kubevirtClient(t, env.Management.Config)
	opts := pvcOptions("data", "pvc-data", "s1", kubevirtv1.DiskBusVirtio)
	opts.VolumeSource = &kubevirtv1.HotplugVolumeSource{DataVolume: &kubevirtv1.DataVolumeSource{Name: "dv-data"}}
	if err := kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctxT(t), "stopped", opts); err != nil {
		t.Fatalf("AddVolume on a stopped VM: %v", err)
	}
	vol, _ := findVolume(getVM(t, ns, "stopped").Spec.Template.Spec, "data")
	if vol == nil || vol.DataVolume == nil || vol.DataVolume.Name != "dv-data" || !vol.DataVolume.Hotpluggable {
		t.Fatalf("template volume = %+v, want hotpluggable DataVolume dv-data", vol)
	}
}

func TestVMIAddVolumeIsEphemeral(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	kv := kubevirtClient(t, env.Management.Config)
	ctx := ctxT(t)
	if err := kv.KubevirtV1().VirtualMachineInstances(ns).AddVolume(ctx, "vm-1", pvcOptions("scratch", "pvc-scratch", "scratch", kubevirtv1.DiskBusVirtio)); err != nil {
		t.Fatalf("VMI AddVolume: %v", err)
	}
	if vol, _ := findVolume(getVMI(t, ns, "vm-1").Spec, "scratch"); vol == nil {
		t.Fatal("VMI lacks the volume")
	}
	if vol, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "scratch"); vol != nil {
		t.Fatal("VMI-level hotplug leaked into the VM template (it must not survive a restart)")
	}
	if err := kv.KubevirtV1().VirtualMachineInstances(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "scratch"}); err != nil {
		t.Fatalf("VMI RemoveVolume: %v", err)
	}
	if vol, _ := findVolume(getVMI(t, ns, "vm-1").Spec, "scratch"); vol != nil {
		t.Fatal("VMI still has the volume")
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	opts := pvcOptions("data", "pvc-data", "d", kubevirtv1.DiskBusVirtio)
	opts.DryRun = []string{metav1.DryRunAll}
	if err := kubevirtClient(t, env.Management.Config).KubevirtV1().VirtualMachines(ns).AddVolume(ctxT(t), "vm-1", opts); err != nil {
		t.Fatalf("dry-run AddVolume: %v", err)
	}
	if vol, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "data"); vol != nil {
		t.Fatal("dry run changed the VM")
	}
}

// Every refusal upstream makes, through the aggregation layer, with its code and a message
// that names what is wrong.
func TestAddVolumeValidation(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	createVM(t, ns, "vm-stopped", false)
	stoppedVMI := &kubevirtv1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vmi-pending"}}
	if err := env.Management.Client.Create(ctxT(t), stoppedVMI); err != nil {
		t.Fatal(err)
	}
	kv := kubevirtClient(t, env.Management.Config).KubevirtV1()
	ctx := ctxT(t)
	if err := kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("taken", "pvc-taken", "t", kubevirtv1.DiskBusVirtio)); err != nil {
		t.Fatal(err)
	}
	withBus := func(bus kubevirtv1.DiskBus) *kubevirtv1.AddVolumeOptions { return pvcOptions("v", "pvc-v", "s", bus) }

	for _, tc := range []struct {
		name   string
		vmi    bool
		target string
		opts   *kubevirtv1.AddVolumeOptions
		code   int32
		msg    string
	}{
		{name: "unknown VM", target: "nope", opts: withBus(kubevirtv1.DiskBusVirtio), code: http.StatusNotFound, msg: `virtualmachine.kubevirt.io "nope" not found`},
		{name: "unknown VMI", vmi: true, target: "nope", opts: withBus(kubevirtv1.DiskBusVirtio), code: http.StatusNotFound, msg: `virtualmachineinstance.kubevirt.io "nope" not found`},
		{name: "VMI not running", vmi: true, target: "vmi-pending", opts: withBus(kubevirtv1.DiskBusVirtio), code: http.StatusConflict, msg: "VMI is not running"},
		{name: "missing name", target: "vm-1", opts: &kubevirtv1.AddVolumeOptions{Disk: &kubevirtv1.Disk{}, VolumeSource: &kubevirtv1.HotplugVolumeSource{}}, code: http.StatusBadRequest, msg: "requires name"},
		{name: "missing disk", target: "vm-1", opts: &kubevirtv1.AddVolumeOptions{Name: "v", VolumeSource: &kubevirtv1.HotplugVolumeSource{}}, code: http.StatusBadRequest, msg: "requires disk"},
		{name: "missing volume source", target: "vm-1", opts: &kubevirtv1.AddVolumeOptions{Name: "v", Disk: &kubevirtv1.Disk{}}, code: http.StatusBadRequest, msg: "requires VolumeSource"},
		{name: "sata bus", target: "vm-1", opts: withBus(kubevirtv1.DiskBusSATA), code: http.StatusUnprocessableEntity, msg: "AddVolume request for disk [v] requires bus to be 'scsi' or 'virtio'. [sata] is not permitted."},
		{name: "sata bus on VMI", vmi: true, target: "vm-1", opts: withBus(kubevirtv1.DiskBusSATA), code: http.StatusUnprocessableEntity, msg: "Hotplug configuration for disk [v] requires bus"},
		{name: "no bus", target: "vm-1", opts: withBus(""), code: http.StatusUnprocessableEntity, msg: "[] is not permitted"},
		{name: "cdrom", target: "vm-1", opts: &kubevirtv1.AddVolumeOptions{Name: "v", Disk: &kubevirtv1.Disk{DiskDevice: kubevirtv1.DiskDevice{CDRom: &kubevirtv1.CDRomTarget{}}}, VolumeSource: withBus("").VolumeSource}, code: http.StatusUnprocessableEntity, msg: "requires diskDevice of type 'disk' or 'lun'"},
		{name: "duplicate name", target: "vm-1", opts: pvcOptions("taken", "pvc-other", "s", kubevirtv1.DiskBusVirtio), code: http.StatusConflict, msg: "Unable to add volume [taken] because volume with that name already exists"},
		{name: "duplicate source", target: "vm-1", opts: pvcOptions("other", "pvc-taken", "s", kubevirtv1.DiskBusVirtio), code: http.StatusConflict, msg: "Unable to add volume source [pvc-taken] because it already exists"},
		{name: "duplicate name on VMI", vmi: true, target: "vm-1", opts: pvcOptions("taken", "pvc-other", "s", kubevirtv1.DiskBusVirtio), code: http.StatusConflict, msg: "[taken]"},
		{name: "no PVC or DataVolume", target: "vm-1", opts: &kubevirtv1.AddVolumeOptions{Name: "v", Disk: withBus(kubevirtv1.DiskBusVirtio).Disk, VolumeSource: &kubevirtv1.HotplugVolumeSource{}}, code: http.StatusUnprocessableEntity, msg: "volume v is not a PVC or DataVolume"},
		{name: "bad serial", target: "vm-1", opts: pvcOptions("v", "pvc-v", "no spaces", kubevirtv1.DiskBusVirtio), code: http.StatusUnprocessableEntity, msg: "[A-Za-z0-9_.+-]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.vmi {
				err = kv.VirtualMachineInstances(ns).AddVolume(ctx, tc.target, tc.opts)
			} else {
				err = kv.VirtualMachines(ns).AddVolume(ctx, tc.target, tc.opts)
			}
			var status apierrors.APIStatus
			if !asStatus(err, &status) {
				t.Fatalf("want a Status error, got %v", err)
			}
			if got := status.Status(); got.Code != tc.code || !strings.Contains(got.Message, tc.msg) {
				t.Fatalf("got %d %q, want %d containing %q", got.Code, got.Message, tc.code, tc.msg)
			}
		})
	}

	// KubeVirt does not look the claim up at request time: a missing PVC is accepted and the
	// volume then waits in phase Pending (FailedPvcNotFound) on the VMI.
	if err := kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("ghost", "no-such-pvc", "g", kubevirtv1.DiskBusVirtio)); err != nil {
		t.Fatalf("AddVolume of a missing PVC: want accepted as upstream, got %v", err)
	}
}

func TestRemoveVolumeValidation(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	kv := kubevirtClient(t, env.Management.Config).KubevirtV1()
	ctx := ctxT(t)
	for _, tc := range []struct {
		name, target, volume string
		vmi                  bool
		code                 int32
		msg                  string
	}{
		{name: "unknown VM", target: "nope", volume: "x", code: http.StatusNotFound, msg: "not found"},
		{name: "missing name", target: "vm-1", volume: "", code: http.StatusBadRequest, msg: "RemoveVolumeOptions requires name"},
		{name: "absent volume", target: "vm-1", volume: "x", code: http.StatusConflict, msg: "Unable to remove volume [x] because it does not exist"},
		{name: "not hotpluggable", target: "vm-1", volume: "rootdisk", code: http.StatusConflict, msg: "Unable to remove volume [rootdisk] because it is not hotpluggable"},
		{name: "not hotpluggable on VMI", vmi: true, target: "vm-1", volume: "rootdisk", code: http.StatusConflict, msg: "not hotpluggable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.vmi {
				err = kv.VirtualMachineInstances(ns).RemoveVolume(ctx, tc.target, &kubevirtv1.RemoveVolumeOptions{Name: tc.volume})
			} else {
				err = kv.VirtualMachines(ns).RemoveVolume(ctx, tc.target, &kubevirtv1.RemoveVolumeOptions{Name: tc.volume})
			}
			var status apierrors.APIStatus
			if !asStatus(err, &status) {
				t.Fatalf("want a Status error, got %v", err)
			}
			if got := status.Status(); got.Code != tc.code || !strings.Contains(got.Message, tc.msg) {
				t.Fatalf("got %d %q, want %d containing %q", got.Code, got.Message, tc.code, tc.msg)
			}
		})
	}
}

func asStatus(err error, into *apierrors.APIStatus) bool {
	return errors.As(err, into)
}
