package virtapi

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
)

// TestFeatureGates: virt-api's answers follow KubeVirt's hot-plug gates as upstream's
// volumes.go does. DeclarativeHotplugVolumes alone: a VM-level add patches only the VM spec
// (the VM controller carries it into the VMI), a VMI-level call on a VM-owned VMI is 400.
// Neither gate: 400 naming both.
func TestFeatureGates(t *testing.T) {
	server(t)
	t.Cleanup(func() { gates.Set(featuregate.HotplugVolumes) })
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	kv := kubevirtClient(t, env.Management.Config)
	ctx := ctxT(t)

	gates.Set(featuregate.DeclarativeHotplugVolumes)
	if err := kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("data", "pvc-data", "s1", kubevirtv1.DiskBusSCSI)); err != nil {
		t.Fatalf("VM-level AddVolume (declarative): %v", err)
	}
	if v, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "data"); v == nil || !v.PersistentVolumeClaim.Hotpluggable {
		t.Fatalf("VM template volume = %+v, want the hotpluggable claim", v)
	}
	if v, _ := findVolume(getVMI(t, ns, "vm-1").Spec, "data"); v != nil {
		t.Fatal("virt-api wrote the VMI; with DeclarativeHotplugVolumes the VM controller does")
	}
	err := kv.KubevirtV1().VirtualMachineInstances(ns).AddVolume(ctx, "vm-1", pvcOptions("scratch", "pvc-scratch", "s2", kubevirtv1.DiskBusSCSI))
	if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "is owned by a VM") {
		t.Fatalf("VMI-level AddVolume on a VM-owned VMI (declarative): %v, want 400 'is owned by a VM'", err)
	}
	err = kv.KubevirtV1().VirtualMachineInstances(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "rootdisk"})
	if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "is owned by a VM") {
		t.Fatalf("VMI-level RemoveVolume on a VM-owned VMI (declarative): %v, want 400", err)
	}
	if err := kv.KubevirtV1().VirtualMachines(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "data"}); err != nil {
		t.Fatalf("VM-level RemoveVolume (declarative): %v", err)
	}
	if v, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "data"); v != nil {
		t.Fatal("VM-level RemoveVolume left the template volume")
	}

	gates.Set()
	for what, err := range map[string]error{
		"VM addvolume":     kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("d2", "pvc-d2", "s3", kubevirtv1.DiskBusSCSI)),
		"VM removevolume":  kv.KubevirtV1().VirtualMachines(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "d2"}),
		"VMI addvolume":    kv.KubevirtV1().VirtualMachineInstances(ns).AddVolume(ctx, "vm-1", pvcOptions("d2", "pvc-d2", "s3", kubevirtv1.DiskBusSCSI)),
		"VMI removevolume": kv.KubevirtV1().VirtualMachineInstances(ns).RemoveVolume(ctx, "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "d2"}),
	} {
		if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), hotplugNotEnabled) {
			t.Errorf("%s with neither gate: %v, want 400 %q", what, err, hotplugNotEnabled)
		}
	}
	if v, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "d2"); v != nil {
		t.Fatal("a refused request changed the VM")
	}
}
