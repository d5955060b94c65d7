package hotplug

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/kubevirt"

	"github.com/tenantcloud/tenantcloud/test/sim/virtapi"
)

// The whole chain a CSI controller drives: addvolume through the real aggregation layer, the
// volume walked to Ready, the disk visible in the VM's device directory, and back out.
func TestHotplugThroughVirtAPI(t *testing.T) {
	s := startSim(t)
	api, err := virtapi.Start(ctxT(t), env.Management.Config, virtapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := api.Stop(context.Background()); err != nil {
			t.Errorf("stopping virt-api: %v", err)
		}
	})
	ns := namespace(t)
	always := kubevirtv1.RunStrategyAlways
	vm := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vm-1"},
		Spec: kubevirtv1.VirtualMachineSpec{RunStrategy: &always, Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
			Spec: kubevirtv1.VirtualMachineInstanceSpec{Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{}}},
		}},
	}
	if err := k8s(t).Create(ctxT(t), vm); err != nil {
		t.Fatal(err)
	}
	createRunningVMI(t, ns, "vm-1")
	createPVC(t, ns, "pvc-data", 16*mib, true)
	kv, err := kubevirt.NewForConfig(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	opts := &kubevirtv1.AddVolumeOptions{
		Name: "data",
		Disk: &kubevirtv1.Disk{Serial: "e2e-serial", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}}},
		VolumeSource: &kubevirtv1.HotplugVolumeSource{PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{
			PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: "pvc-data"},
		}},
	}
	if err := kv.KubevirtV1().VirtualMachines(ns).AddVolume(ctxT(t), "vm-1", opts); err != nil {
		t.Fatalf("AddVolume: %v", err)
	}
	waitPhase(t, ns, "vm-1", "data", kubevirtv1.VolumeReady)
	deviceOf(t, s, ns, "vm-1", "virtio-e2e-serial")

	if err := kv.KubevirtV1().VirtualMachines(ns).RemoveVolume(ctxT(t), "vm-1", &kubevirtv1.RemoveVolumeOptions{Name: "data"}); err != nil {
		t.Fatalf("RemoveVolume: %v", err)
	}
	waitGone(t, ns, "vm-1", "data")
	pollNoDisks(t, s, ns, "vm-1")
}
