package cdi

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Deleting a DataVolume deletes its claim (the garbage collector's job upstream); the claim
// stays while a scheduled pod uses it (pvc-protection); then the PV is released and, with
// reclaim policy Delete, deleted.
func TestDeleteDataVolumeRemovesClaimThenVolume(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-delete")
	storageClass(t, "linstor-delete")
	dv := newDV(t, ns, "disk", dvSpec{class: ptr("linstor-delete"), size: "64Mi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "disk"), cdiv1.Succeeded)
	pvName := getPVC(t, key(ns, "disk")).Spec.VolumeName
	pv := getPV(t, pvName)
	if !slices.Contains(pv.Finalizers, finalizerProvisioner) {
		t.Errorf("PV finalizers %v, want the external-provisioner's", pv.Finalizers)
	}

	// A virt-launcher-like pod using the claim, scheduled to a node.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "virt-launcher-vm"},
		Spec: corev1.PodSpec{
			NodeName:   "infra-1",
			Containers: []corev1.Container{{Name: "compute", Image: "virt-launcher"}},
			Volumes: []corev1.Volume{{Name: "disk", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "disk"}}}},
		},
	}
	if err := kube().Create(testCtx(t), pod); err != nil {
		t.Fatal(err)
	}
	if err := kube().Delete(testCtx(t), dv); err != nil {
		t.Fatal(err)
	}
	waitPVC(t, key(ns, "disk"), "terminating", func(p *corev1.PersistentVolumeClaim) bool { return p.DeletionTimestamp != nil })
	stays(t, "PVC protected while the pod uses it", 5*testPhaseDelay, func(ctx context.Context) (bool, error) {
		p := &corev1.PersistentVolumeClaim{}
		return kube().Get(ctx, key(ns, "disk"), p) == nil && slices.Contains(p.Finalizers, finalizerPVCProtection), nil
	})

	if err := kube().Delete(testCtx(t), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "claim gone", func(ctx context.Context) (bool, error) {
		err := kube().Get(ctx, key(ns, "disk"), &corev1.PersistentVolumeClaim{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	eventually(t, "volume gone", func(ctx context.Context) (bool, error) {
		err := kube().Get(ctx, client.ObjectKey{Name: pvName}, &corev1.PersistentVolume{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// A PV with reclaim policy Retain is only Released when its claim goes.
func TestRetainedVolumeIsReleased(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-retain")
	retain := corev1.PersistentVolumeReclaimRetain
	storageClass(t, "linstor-retain", func(sc *storagev1.StorageClass) { sc.ReclaimPolicy = &retain })
	claim := plainClaim(t, ns, "keep", "linstor-retain", "16Mi", block)
	pvc := waitPVC(t, key(ns, "keep"), "bound", func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })
	if err := kube().Delete(testCtx(t), claim); err != nil {
		t.Fatal(err)
	}
	eventually(t, "retained PV Released", func(ctx context.Context) (bool, error) {
		pv := &corev1.PersistentVolume{}
		if err := kube().Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
			return false, err
		}
		return pv.Status.Phase == corev1.VolumeReleased && pv.DeletionTimestamp == nil, nil
	})
	// Clean up: deleting a Released PV lets the protection finalizers go.
	pv := getPV(t, pvc.Spec.VolumeName)
	if err := kube().Delete(testCtx(t), pv); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted retained PV gone", func(ctx context.Context) (bool, error) {
		err := kube().Get(ctx, client.ObjectKey{Name: pv.Name}, &corev1.PersistentVolume{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}
