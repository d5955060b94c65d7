package infra

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAdopted(t *testing.T) {
	adopted := func(mut func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
			Namespace: testScope.Namespace, Name: "a0123", UID: "uid-1",
			Labels: testScope.OwnedLabels("ccm"), Annotations: testScope.OwnedAnnotations(),
		}}
		s.Annotations[AnnotationAdoptedFrom] = AdoptedFromCCM
		s.Annotations[AnnotationAdoptedUID] = "uid-1"
		if mut != nil {
			mut(s)
		}
		return s
	}
	for _, tc := range []struct {
		name string
		obj  *corev1.Service
		from string
		want bool
	}{
		{"adopted", adopted(nil), AdoptedFromCCM, true},
		{"other component", adopted(nil), AdoptedFromCSI, false},
		{"re-created under the same name", adopted(func(s *corev1.Service) { s.UID = "uid-2" }), AdoptedFromCCM, false},
		{"no UID mark", adopted(func(s *corev1.Service) { delete(s.Annotations, AnnotationAdoptedUID) }), AdoptedFromCCM, false},
		{"not owned", adopted(func(s *corev1.Service) { delete(s.Labels, LabelManagedBy) }), AdoptedFromCCM, false},
		{"another cluster", adopted(func(s *corev1.Service) { s.Labels[LabelClusterName] = "beta" }), AdoptedFromCCM, false},
		{"native, not adopted", adopted(func(s *corev1.Service) { delete(s.Annotations, AnnotationAdoptedFrom) }), AdoptedFromCCM, false},
	} {
		if got := testScope.Adopted(tc.obj, tc.from); got != tc.want {
			t.Errorf("%s: Adopted = %v, want %v", tc.name, got, tc.want)
		}
	}
}
