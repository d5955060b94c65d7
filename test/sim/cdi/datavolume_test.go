package cdi

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A blank Block DataVolume on a LINSTOR class: CDI's populator flow (the class's driver has
// a CSIDriver object), LINSTOR's KiB rounding, everything bound and owned as upstream.
func TestBlankDataVolumeBindsAndSucceeds(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-blank")
	storageClass(t, "linstor-blank")
	pw := watchPhases(t, ns, "disk")
	dv := newDV(t, ns, "disk", dvSpec{
		class: ptr("linstor-blank"), size: "1000000000", access: []corev1.PersistentVolumeAccessMode{rwx},
		source: blank(), labels: map[string]string{"tenantcloud.io/volume": "v1"},
	})
	assertPhases(t, pw.until(t, cdiv1.Succeeded), cdiv1.Pending, cdiv1.ImportScheduled, cdiv1.ImportInProgress, cdiv1.Succeeded)

	dv = getDV(t, key(ns, "disk"))
	if dv.Status.Progress != "100.0%" || dv.Status.ClaimName != "disk" {
		t.Errorf("status progress=%q claimName=%q", dv.Status.Progress, dv.Status.ClaimName)
	}
	for typ, want := range map[cdiv1.DataVolumeConditionType]corev1.ConditionStatus{
		cdiv1.DataVolumeReady: corev1.ConditionTrue, cdiv1.DataVolumeBound: corev1.ConditionTrue, cdiv1.DataVolumeRunning: corev1.ConditionFalse,
	} {
		if c := condition(dv, typ); c.Status != want {
			t.Errorf("condition %s = %+v, want %s", typ, c, want)
		}
	}
	if c := condition(dv, cdiv1.DataVolumeRunning); c.Reason != "Completed" {
		t.Errorf("Running condition reason %q, want Completed", c.Reason)
	}
	if dv.Annotations[annUsePopulator] != "true" {
		t.Errorf("DataVolume annotation %s = %q, want true", annUsePopulator, dv.Annotations[annUsePopulator])
	}

	pvc := getPVC(t, key(ns, "disk"))
	if !metav1.IsControlledBy(pvc, dv) {
		t.Errorf("PVC owner references %+v, want controller DataVolume %s", pvc.OwnerReferences, dv.UID)
	}
	if pvc.Labels["tenantcloud.io/volume"] != "v1" || pvc.Labels["app"] != "containerized-data-importer" {
		t.Errorf("PVC labels %v: want the DataVolume's and CDI's", pvc.Labels)
	}
	// spec.storage without volumeMode: CDI's StorageProfile for LINSTOR says Block; Block
	// gets no filesystem overhead.
	if pvc.Spec.VolumeMode == nil || *pvc.Spec.VolumeMode != block {
		t.Errorf("PVC volumeMode %v, want Block", pvc.Spec.VolumeMode)
	}
	if got := storage(pvc.Spec.Resources.Requests); got != 1000000000 {
		t.Errorf("PVC request %d, want 1000000000 (no overhead for Block)", got)
	}
	if ref := pvc.Spec.DataSourceRef; ref == nil || ref.Kind != "VolumeImportSource" {
		t.Errorf("PVC dataSourceRef %+v, want CDI's VolumeImportSource", ref)
	}
	if pvc.Status.Phase != corev1.ClaimBound || !slices.Equal(pvc.Status.AccessModes, []corev1.PersistentVolumeAccessMode{rwx}) {
		t.Errorf("PVC status %+v", pvc.Status)
	}
	// LINSTOR allocates whole KiB: 1e9 bytes is 976562.5 KiB.
	if got := storage(pvc.Status.Capacity); got != 1000000512 {
		t.Errorf("PVC capacity %d, want 1000000512", got)
	}

	pv := getPV(t, pvc.Spec.VolumeName)
	if pv.Name != "pvc-"+string(pvc.UID) {
		t.Errorf("PV name %s, want pvc-<claim uid>", pv.Name)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver || pv.Spec.CSI.VolumeHandle != pv.Name {
		t.Errorf("PV CSI source %+v", pv.Spec.CSI)
	}
	if storage(pv.Spec.Capacity) != 1000000512 || pv.Spec.StorageClassName != "linstor-blank" ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		pv.Spec.VolumeMode == nil || *pv.Spec.VolumeMode != block {
		t.Errorf("PV spec %+v", pv.Spec)
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.UID != pvc.UID || ref.Name != "disk" || ref.Namespace != ns {
		t.Errorf("PV claimRef %+v", pv.Spec.ClaimRef)
	}
	if pv.Status.Phase != corev1.VolumeBound {
		t.Errorf("PV phase %s, want Bound", pv.Status.Phase)
	}
	if !slices.Contains(pv.Finalizers, finalizerPVProtection) || !slices.Contains(pvc.Finalizers, finalizerPVCProtection) {
		t.Errorf("finalizers PV %v PVC %v: the apiserver's protection finalizers are missing", pv.Finalizers, pvc.Finalizers)
	}
	waitEvent(t, ns, "DataVolume", "disk", "ImportSucceeded")
}

// spec.storage on Filesystem gets CDI's overhead; the default class is used when none is
// named; spec.pvc is taken verbatim.
func TestFilesystemOverheadDefaultClassAndSpecPVC(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-fs")
	storageClass(t, "linstor-default", defaultClass)
	newDV(t, ns, "fs", dvSpec{size: "1Gi", mode: &fs, access: []corev1.PersistentVolumeAccessMode{rwo}, source: blank()})

	raw := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "raw"},
		Spec: cdiv1.DataVolumeSpec{
			Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			PVC: &corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr("linstor-default"), VolumeMode: &fs, AccessModes: []corev1.PersistentVolumeAccessMode{rwo},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		},
	}
	if err := kube().Create(testCtx(t), raw); err != nil {
		t.Fatal(err)
	}
	waitDVPhase(t, key(ns, "fs"), cdiv1.Succeeded)
	waitDVPhase(t, key(ns, "raw"), cdiv1.Succeeded)

	pvc := getPVC(t, key(ns, "fs"))
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "linstor-default" {
		t.Errorf("PVC class %v, want the default linstor-default", pvc.Spec.StorageClassName)
	}
	// 1 GiB aligned to 1 MiB, times 1.06 (CDI's default filesystem overhead), rounded up;
	// then LINSTOR's whole KiB.
	if got := storage(pvc.Spec.Resources.Requests); got != 1138166334 {
		t.Errorf("Filesystem PVC request %d, want 1138166334", got)
	}
	if got := storage(pvc.Status.Capacity); got != 1138166784 {
		t.Errorf("Filesystem PVC capacity %d, want 1138166784", got)
	}
	if pvc.Labels["alerts.k8s.io/KubePersistentVolumeFillingUp"] != "disabled" {
		t.Errorf("Filesystem PVC labels %v: CDI suppresses the filling-up alert", pvc.Labels)
	}
	if pv := getPV(t, pvc.Spec.VolumeName); pv.Spec.CSI.FSType != "ext4" {
		t.Errorf("Filesystem PV fsType %q, want ext4", pv.Spec.CSI.FSType)
	}
	rawPVC := getPVC(t, key(ns, "raw"))
	if got := storage(rawPVC.Spec.Resources.Requests); got != 1<<30 {
		t.Errorf("spec.pvc request %d, want exactly 1Gi", got)
	}
}

// A missing StorageClass: with access modes CDI creates the claim anyway and it stays
// Pending (the PV controller reports the class); without them CDI cannot render the claim.
// Both recover when the class appears.
func TestMissingStorageClassThenCreated(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-noclass")
	pwA := watchPhases(t, ns, "with-modes")
	newDV(t, ns, "with-modes", dvSpec{class: ptr("linstor-late"), size: "64Mi", mode: &block,
		access: []corev1.PersistentVolumeAccessMode{rwo}, source: blank()})
	newDV(t, ns, "no-modes", dvSpec{class: ptr("linstor-late"), size: "64Mi", source: blank()})

	dvA := waitDVPhase(t, key(ns, "with-modes"), cdiv1.Pending)
	if c := condition(dvA, cdiv1.DataVolumeBound); c.Status != corev1.ConditionFalse || c.Reason != "Pending" {
		t.Errorf("Bound condition %+v, want False/Pending", c)
	}
	msg := waitEvent(t, ns, "PersistentVolumeClaim", "with-modes", "ProvisioningFailed")
	mustContain(t, "PVC ProvisioningFailed event", msg, `storageclass.storage.k8s.io "linstor-late" not found`)
	if getPVC(t, key(ns, "with-modes")).Status.Phase != corev1.ClaimPending {
		t.Error("claim of a missing class is not Pending")
	}

	eventually(t, "no-modes to report the unrenderable claim", func(ctx context.Context) (bool, error) {
		dv := &cdiv1.DataVolume{}
		if err := kube().Get(ctx, key(ns, "no-modes"), dv); err != nil {
			return false, err
		}
		c := condition(dv, cdiv1.DataVolumeBound)
		return c.Reason == reasonClaimNotValid && c.Message == messageStorageClassNotFound && dv.Status.Phase == cdiv1.PhaseUnset, nil
	})
	if err := kube().Get(testCtx(t), key(ns, "no-modes"), &corev1.PersistentVolumeClaim{}); err == nil {
		t.Fatal("a claim was created for a DataVolume CDI cannot render")
	}

	storageClass(t, "linstor-late")
	// Created before the class, "with-modes" runs CDI's legacy (non-populator) flow.
	assertPhases(t, pwA.until(t, cdiv1.Succeeded),
		cdiv1.Pending, cdiv1.PVCBound, cdiv1.ImportScheduled, cdiv1.ImportInProgress, cdiv1.Succeeded)
	if a := getDV(t, key(ns, "with-modes")).Annotations[annUsePopulator]; a != "false" {
		t.Errorf("%s = %q, want false", annUsePopulator, a)
	}
	waitDVPhase(t, key(ns, "no-modes"), cdiv1.Succeeded)
	pvc := getPVC(t, key(ns, "no-modes"))
	if *pvc.Spec.VolumeMode != block || !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{rwx}) {
		t.Errorf("modes from the LINSTOR StorageProfile: got %s %v, want Block [ReadWriteMany]", *pvc.Spec.VolumeMode, pvc.Spec.AccessModes)
	}
}

// WaitForFirstConsumer: the populator waits (PendingPopulation) until the scheduler has
// picked a node for a consumer, which it records on the claim.
func TestWaitForFirstConsumer(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-wffc")
	storageClass(t, "linstor-wffc", func(sc *storagev1.StorageClass) {
		m := storagev1.VolumeBindingWaitForFirstConsumer
		sc.VolumeBindingMode = &m
	})
	newDV(t, ns, "late", dvSpec{class: ptr("linstor-wffc"), size: "16Mi", mode: &block, source: blank()})
	waitDVPhase(t, key(ns, "late"), cdiv1.PendingPopulation)
	stays(t, "PendingPopulation without a consumer", 4*testPhaseDelay, func(ctx context.Context) (bool, error) {
		dv := &cdiv1.DataVolume{}
		return kube().Get(ctx, key(ns, "late"), dv) == nil && dv.Status.Phase == cdiv1.PendingPopulation, nil
	})
	pvc := getPVC(t, key(ns, "late"))
	patch := client.MergeFrom(pvc.DeepCopy())
	pvc.Annotations[annSelectedNode] = "infra-1"
	if err := kube().Patch(testCtx(t), pvc, patch); err != nil {
		t.Fatal(err)
	}
	waitDVPhase(t, key(ns, "late"), cdiv1.Succeeded)
}

// A claim of the DataVolume's name that CDI did not create is not taken over.
func TestExistingClaimIsNotAdopted(t *testing.T) {
	startSim(t, Options{PhaseDelay: testPhaseDelay})
	ns := namespace(t, "dv-exists")
	storageClass(t, "linstor-exists")
	plainClaim(t, ns, "taken", "linstor-exists", "16Mi", block)
	newDV(t, ns, "taken", dvSpec{class: ptr("linstor-exists"), size: "16Mi", mode: &block, source: blank()})
	msg := waitEvent(t, ns, "DataVolume", "taken", "ErrResourceExists")
	mustContain(t, "event", msg, `Resource "taken" already exists and is not managed by DataVolume`)
	if pvc := getPVC(t, key(ns, "taken")); len(pvc.OwnerReferences) != 0 {
		t.Errorf("foreign claim got owners %v", pvc.OwnerReferences)
	}
}
