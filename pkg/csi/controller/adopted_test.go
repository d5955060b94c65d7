package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// TestAdoptedVolumeOwnership: a legacy handle is a volume only on a DataVolume adoption marked
// for this tenant's csi-controller with its own UID; it keeps the upstream serial (its UID).
func TestAdoptedVolumeOwnership(t *testing.T) {
	scope := infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}
	s := &Server{scope: scope}
	const handle, uid = "pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b", "7d3c1c3e-55b1-4f4e-8a57-1b2d3c4e5f60"
	adopted := func(mut func(*cdiv1.DataVolume)) *cdiv1.DataVolume {
		dv := &cdiv1.DataVolume{
			ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: handle, UID: uid,
				Labels: scope.OwnedLabels(Component), Annotations: scope.OwnedAnnotations()},
			Spec: cdiv1.DataVolumeSpec{Storage: &cdiv1.StorageSpec{Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}},
		}
		dv.Labels["csi-driver/cluster"] = "alpha"
		dv.Annotations[infra.AnnotationAdoptedFrom] = infra.AdoptedFromCSI
		dv.Annotations[infra.AnnotationAdoptedUID] = uid
		if mut != nil {
			mut(dv)
		}
		return dv
	}
	v, ok := s.asVolume(adopted(nil))
	if !ok {
		t.Fatal("adopted DataVolume is not a volume")
	}
	if v.id != handle || v.serial != uid || v.bus != tccsi.BusSCSI || v.capacity != 1<<30 {
		t.Errorf("adopted volume = id %s serial %s bus %s capacity %d", v.id, v.serial, v.bus, v.capacity)
	}
	for name, mut := range map[string]func(*cdiv1.DataVolume){
		"upstream, not adopted": func(dv *cdiv1.DataVolume) {
			dv.Labels, dv.Annotations = map[string]string{"csi-driver/cluster": "alpha"}, nil
		},
		"adopted for beta":         func(dv *cdiv1.DataVolume) { dv.Labels[infra.LabelClusterName] = "beta" },
		"ccm's adoption mark":      func(dv *cdiv1.DataVolume) { dv.Annotations[infra.AnnotationAdoptedFrom] = infra.AdoptedFromCCM },
		"re-created (other UID)":   func(dv *cdiv1.DataVolume) { dv.UID = "00000000-0000-0000-0000-000000000000" },
		"another component":        func(dv *cdiv1.DataVolume) { dv.Labels[infra.LabelComponent] = "ccm" },
		"not a legacy handle form": func(dv *cdiv1.DataVolume) { dv.Name = "pvc-data" },
	} {
		if _, ok := s.asVolume(adopted(mut)); ok {
			t.Errorf("%s: accepted as a volume", name)
		}
	}
}
