package virtapi

import (
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

func TestFaultFailNextAnswers500ThenRecovers(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	kv := kubevirtClient(t, env.Management.Config).KubevirtV1()
	ctx := ctxT(t)
	// Each armed failure is consumed below; the injector has no disarm for FailNext.
	faults.FailNext(FaultAddVolume, 1)
	opts := pvcOptions("data", "pvc-data", "d", kubevirtv1.DiskBusVirtio)
	err := kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", opts)
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), FaultAddVolume) {
		t.Fatalf("want 500 naming the fault point, got %v", err)
	}
	if vol, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "data"); vol != nil {
		t.Fatal("failed request changed the VM")
	}
	if err := kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", opts); err != nil {
		t.Fatalf("retry after the injected failure: %v", err)
	}

	faults.FailNext(FaultRemoveVolume, 1)
	rm := &kubevirtv1.RemoveVolumeOptions{Name: "data"}
	if err := kv.VirtualMachines(ns).RemoveVolume(ctx, "vm-1", rm); !apierrors.IsInternalError(err) {
		t.Fatalf("want 500 from removevolume, got %v", err)
	}
	if err := kv.VirtualMachines(ns).RemoveVolume(ctx, "vm-1", rm); err != nil {
		t.Fatalf("retry removevolume: %v", err)
	}
}

func TestFaultLatencyAndStall(t *testing.T) {
	server(t)
	ns := namespace(t)
	createVM(t, ns, "vm-1", true)
	kv := kubevirtClient(t, env.Management.Config).KubevirtV1()
	ctx := ctxT(t)
	t.Cleanup(func() {
		faults.SetLatency(FaultAddVolume, 0)
		faults.Release(FaultAddVolume)
	})

	const delay = 400 * time.Millisecond
	faults.SetLatency(FaultAddVolume, delay)
	start := time.Now()
	if err := kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("slow", "pvc-slow", "s", kubevirtv1.DiskBusVirtio)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("request took %s with %s latency armed", took, delay)
	}
	faults.SetLatency(FaultAddVolume, 0)

	faults.Stall(FaultAddVolume)
	done := make(chan error, 1)
	go func() {
		done <- kv.VirtualMachines(ns).AddVolume(ctx, "vm-1", pvcOptions("held", "pvc-held", "h", kubevirtv1.DiskBusVirtio))
	}()
	select {
	case err := <-done:
		t.Fatalf("stalled request returned: %v", err)
	case <-time.After(500 * time.Millisecond): // a negative check needs a bound, not a sync
	}
	if vol, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "held"); vol != nil {
		t.Fatal("stalled request already changed the VM")
	}
	faults.Release(FaultAddVolume)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("released request: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("request still held after Release")
	}
	if vol, _ := findVolume(getVM(t, ns, "vm-1").Spec.Template.Spec, "held"); vol == nil {
		t.Fatal("released request did not change the VM")
	}
}
