package controller

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// TestTrimDataVolume: a trimmed DataVolume reads as the same volume (native and adopted) and
// describes itself the same way; only fields nothing reads are gone.
func TestTrimDataVolume(t *testing.T) {
	s := &Server{scope: infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}}
	mode, class := corev1.PersistentVolumeBlock, "linstor"
	native := func() *cdiv1.DataVolume {
		dv := s.newDataVolume(VolumeID("alpha", "pvc-1"), "pvc-1",
			volumeParams{storageClass: class, bus: "scsi", tenantClaim: "default/data"},
			infraLayout{corev1.ReadWriteOnce, mode}, 1<<30, &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}, "volume/tc-src")
		dv.UID = "uid-1"
		dv.Annotations["cdi.kubevirt.io/storage.usePopulator"] = "true"
		dv.Annotations["cdi.kubevirt.io/storage.pod.restarts"] = "0"
		dv.OwnerReferences = []metav1.OwnerReference{*infra.ClusterOwner("alpha", "cl-uid")}
		dv.Status = cdiv1.DataVolumeStatus{Phase: cdiv1.ImportInProgress, ClaimName: dv.Name, RestartCount: 2,
			Conditions: []cdiv1.DataVolumeCondition{
				{Type: cdiv1.DataVolumeBound, Status: corev1.ConditionTrue, Reason: "Bound", Message: "PVC bound"},
				{Type: cdiv1.DataVolumeReady, Status: corev1.ConditionFalse, Reason: "TransferRunning"},
				{Type: cdiv1.DataVolumeRunning, Status: corev1.ConditionFalse, Reason: "Error", Message: "importer failed"},
			}}
		return dv
	}
	before, trimmed := native(), native()
	cacheTrim(trimmed)
	if len(trimmed.Annotations) != len(before.Annotations)-4 { // two CDI marks of ours, two of CDI's
		t.Errorf("annotations after trim: %v", trimmed.Annotations)
	}
	for k := range trimmed.Annotations {
		if before.Annotations[k] != trimmed.Annotations[k] {
			t.Errorf("annotation %s changed", k)
		}
	}
	if len(trimmed.Status.Conditions) != 1 || trimmed.Status.Conditions[0].Message != "importer failed" {
		t.Errorf("conditions after trim: %+v", trimmed.Status.Conditions)
	}
	if got, want := describeDataVolume(trimmed), describeDataVolume(before); got != want {
		t.Errorf("describeDataVolume after trim = %q, want %q", got, want)
	}
	vb, okB := s.asVolume(before)
	vt, okT := s.asVolume(trimmed)
	if !okB || !okT {
		t.Fatalf("asVolume before/after trim: %v/%v", okB, okT)
	}
	vb.dv, vt.dv = nil, nil
	if !reflect.DeepEqual(vb, vt) {
		t.Errorf("volume after trim = %+v, want %+v", vt, vb)
	}
	if !reflect.DeepEqual(trimmed.Spec, before.Spec) || !reflect.DeepEqual(trimmed.OwnerReferences, before.OwnerReferences) ||
		!reflect.DeepEqual(trimmed.Labels, before.Labels) {
		t.Error("trim changed the spec, owner references or labels")
	}

	// An adopted DataVolume keeps its adoption marks.
	adopted := native()
	adopted.Name = "pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b"
	adopted.Annotations[infra.AnnotationAdoptedFrom] = infra.AdoptedFromCSI
	adopted.Annotations[infra.AnnotationAdoptedUID] = string(adopted.UID)
	adopted.Annotations["csi.kubevirt.io/something-upstream"] = "x"
	trimDataVolume(adopted)
	if _, ok := s.asVolume(adopted); !ok {
		t.Errorf("adopted DataVolume is no volume after trim: %v", adopted.Annotations)
	}
	// A succeeded DataVolume keeps no conditions.
	done := native()
	done.Status.Conditions = done.Status.Conditions[:1]
	trimDataVolume(done)
	if done.Status.Conditions != nil {
		t.Errorf("True conditions kept: %+v", done.Status.Conditions)
	}
}

// TestTrimClaim: a trimmed claim still belongs to its DataVolume (ClaimOf's check reads the
// controller reference) and keeps what expansion and volume health read.
func TestTrimClaim(t *testing.T) {
	dv := &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "tc-x", UID: "dv-uid"}}
	group := "cdi.kubevirt.io"
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "tc-x",
			Labels:          map[string]string{infra.LabelClusterName: "alpha", "app": "containerized-data-importer"},
			Finalizers:      []string{"kubernetes.io/pvc-protection"},
			Annotations:     map[string]string{"cdi.kubevirt.io/storage.contentType": "kubevirt", infra.AnnotationCluster: "alpha"},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(dv, cdiv1.SchemeGroupVersion.WithKind("DataVolume"))}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:     corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			DataSourceRef: &corev1.TypedObjectReference{APIGroup: &group, Kind: "VolumeImportSource", Name: "volume-import-source-dv-uid"},
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound,
			Capacity:   corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			Conditions: []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimResizing, Status: corev1.ConditionTrue}}},
	}
	before := pvc.DeepCopy()
	cacheTrim(pvc)
	if pvc.Annotations != nil || pvc.Spec.DataSourceRef != nil || pvc.Finalizers != nil {
		t.Errorf("claim after trim keeps annotations %v, data source %v, finalizers %v", pvc.Annotations, pvc.Spec.DataSourceRef, pvc.Finalizers)
	}
	if want := map[string]string{infra.LabelClusterName: "alpha"}; !reflect.DeepEqual(pvc.Labels, want) {
		t.Errorf("claim labels after trim = %v, want %v", pvc.Labels, want)
	}
	if !(infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}).InCluster(pvc) {
		t.Error("trimmed claim is no longer in the cluster's scope")
	}
	if !reflect.DeepEqual(pvc.Status, before.Status) || !reflect.DeepEqual(pvc.Spec.Resources, before.Spec.Resources) ||
		!reflect.DeepEqual(pvc.OwnerReferences, before.OwnerReferences) {
		t.Error("trim changed the status, requests or owner references")
	}
}
