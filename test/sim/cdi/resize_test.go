package cdi

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// growClaim patches the claim's storage request, as the csi-controller's expand does.
func growClaim(ctx context.Context, ns, name, size string) error {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := kube().Get(ctx, key(ns, name), pvc); err != nil {
		return err
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(size)
	return kube().Patch(ctx, pvc, patch)
}

// Block: after ResizeDelay the PV and the claim's capacity show the new size, LINSTOR-rounded,
// with no node step.
func TestResizeBlockGrowsVolumeAfterDelay(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay, ResizeDelay: testResizeDelay})
	ns := namespace(t, "dv-resize")
	storageClass(t, "linstor-grow", expandable)
	newDV(t, ns, "disk", dvSpec{class: ptr("linstor-grow"), size: "1Gi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "disk"), cdiv1.Succeeded)

	start := time.Now()
	if err := growClaim(testCtx(t), ns, "disk", "2147484648"); err != nil { // 2 GiB + 1000 bytes
		t.Fatalf("growing the claim: %v", err)
	}
	waitPVC(t, key(ns, "disk"), "resizing", func(p *corev1.PersistentVolumeClaim) bool {
		return hasClaimCondition(p, corev1.PersistentVolumeClaimResizing) &&
			p.Status.AllocatedResourceStatuses[corev1.ResourceStorage] == corev1.PersistentVolumeClaimControllerResizeInProgress
	})
	pvc := waitPVC(t, key(ns, "disk"), "resized", func(p *corev1.PersistentVolumeClaim) bool {
		return storage(p.Status.Capacity) > 1<<30
	})
	took := time.Since(start)
	if took < testResizeDelay {
		t.Errorf("resize finished after %s, before ResizeDelay %s", took, testResizeDelay)
	}
	if got := storage(pvc.Status.Capacity); got != 2147484672 {
		t.Errorf("claim capacity %d, want 2147484672 (whole KiB)", got)
	}
	if len(pvc.Status.Conditions) != 0 || len(pvc.Status.AllocatedResourceStatuses) != 0 {
		t.Errorf("finished resize left conditions %+v / statuses %v", pvc.Status.Conditions, pvc.Status.AllocatedResourceStatuses)
	}
	if pv := getPV(t, pvc.Spec.VolumeName); storage(pv.Spec.Capacity) != 2147484672 {
		t.Errorf("PV capacity %d, want 2147484672", storage(pv.Spec.Capacity))
	}
	waitEvent(t, ns, "PersistentVolumeClaim", "disk", "VolumeResizeSuccessful")
	t.Logf("Block resize took %s (ResizeDelay %s)", took.Round(time.Millisecond), testResizeDelay)
}

// Filesystem: the PV grows, the claim waits in FileSystemResizePending until a scheduled pod
// uses it, then kubelet's expansion finishes.
func TestResizeFilesystemWaitsForNode(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay, ResizeDelay: testResizeDelay})
	ns := namespace(t, "dv-resize-fs")
	storageClass(t, "linstor-grow-fs", expandable)
	claim := plainClaim(t, ns, "data", "linstor-grow-fs", "100Mi", fs)
	waitPVC(t, key(ns, "data"), "bound", func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })
	if err := growClaim(testCtx(t), ns, "data", "200Mi"); err != nil {
		t.Fatal(err)
	}
	pvc := waitPVC(t, key(ns, "data"), "FileSystemResizePending", func(p *corev1.PersistentVolumeClaim) bool {
		return hasClaimCondition(p, corev1.PersistentVolumeClaimFileSystemResizePending)
	})
	if storage(pvc.Status.Capacity) != 100<<20 {
		t.Errorf("capacity moved to %d before the node expanded the filesystem", storage(pvc.Status.Capacity))
	}
	if pv := getPV(t, pvc.Spec.VolumeName); storage(pv.Spec.Capacity) != 200<<20 {
		t.Errorf("PV capacity %d after controller expansion, want 200Mi", storage(pv.Spec.Capacity))
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "user"},
		Spec: corev1.PodSpec{
			NodeName:   "infra-1",
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
			Volumes: []corev1.Volume{{Name: "d", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name}}}},
		},
	}
	if err := kube().Create(testCtx(t), pod); err != nil {
		t.Fatal(err)
	}
	pvc = waitPVC(t, key(ns, "data"), "expanded on the node", func(p *corev1.PersistentVolumeClaim) bool {
		return storage(p.Status.Capacity) == 200<<20
	})
	if hasClaimCondition(pvc, corev1.PersistentVolumeClaimFileSystemResizePending) {
		t.Errorf("FileSystemResizePending still set: %+v", pvc.Status.Conditions)
	}
}

// The apiserver itself refuses to grow a claim whose class does not allow expansion; nothing
// reaches the simulator.
func TestResizeRefusedByAPIServerWithoutExpansion(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay, ResizeDelay: testResizeDelay})
	ns := namespace(t, "dv-noresize")
	storageClass(t, "linstor-fixed")
	newDV(t, ns, "disk", dvSpec{class: ptr("linstor-fixed"), size: "64Mi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "disk"), cdiv1.Succeeded)
	err := growClaim(testCtx(t), ns, "disk", "128Mi")
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "storageclass that provisions the pvc must support resize") {
		t.Fatalf("growing a claim of a non-expandable class: err = %v, want Forbidden by the apiserver", err)
	}
}
