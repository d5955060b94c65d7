package infra

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestScopeValidate(t *testing.T) {
	tests := []struct {
		scope Scope
		ok    bool
	}{
		{Scope{Namespace: "tenant-a", ClusterName: "alpha"}, true},
		{Scope{Namespace: "", ClusterName: "alpha"}, false},
		{Scope{Namespace: "Tenant", ClusterName: "alpha"}, false},
		{Scope{Namespace: "tenant-a", ClusterName: ""}, false},
		{Scope{Namespace: "tenant-a", ClusterName: "bad value!"}, false},
	}
	for _, tt := range tests {
		if err := tt.scope.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tt.scope, err, tt.ok)
		}
	}
}

func TestOwns(t *testing.T) {
	s := Scope{Namespace: "tenant-a", ClusterName: "alpha"}
	owned := func(mut func(*metav1.ObjectMeta)) *corev1.Service {
		m := metav1.ObjectMeta{Namespace: "tenant-a", Name: "x", Labels: s.OwnedLabels("ccm"), Annotations: s.OwnedAnnotations()}
		mut(&m)
		return &corev1.Service{ObjectMeta: m}
	}
	tests := []struct {
		name string
		mut  func(*metav1.ObjectMeta)
		want bool
	}{
		{"created by us", func(*metav1.ObjectMeta) {}, true},
		{"other namespace", func(m *metav1.ObjectMeta) { m.Namespace = "tenant-b" }, false},
		{"other cluster label", func(m *metav1.ObjectMeta) { m.Labels[LabelClusterName] = "beta" }, false},
		{"not managed by us", func(m *metav1.ObjectMeta) { delete(m.Labels, LabelManagedBy) }, false},
		{"managed-by someone else", func(m *metav1.ObjectMeta) { m.Labels[LabelManagedBy] = "helm" }, false},
		{"annotation missing", func(m *metav1.ObjectMeta) { m.Annotations = nil }, false},
		{"annotation names another cluster", func(m *metav1.ObjectMeta) { m.Annotations[AnnotationCluster] = "beta" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.Owns(owned(tt.mut)); got != tt.want {
				t.Fatalf("Owns() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProviderIDRoundTrip(t *testing.T) {
	name, err := VMNameFromProviderID(ProviderID("worker-1"))
	if err != nil || name != "worker-1" {
		t.Fatalf("round trip: got %q, %v", name, err)
	}
}

func TestSelectors(t *testing.T) {
	s := Scope{Namespace: "tenant-a", ClusterName: "alpha"}
	if got, want := s.ClusterSelector().String(), "cluster.x-k8s.io/cluster-name=alpha"; got != want {
		t.Errorf("ClusterSelector = %q, want %q", got, want)
	}
	if got := s.OwnedSelector().String(); got != "app.kubernetes.io/managed-by=tenantcloud,cluster.x-k8s.io/cluster-name=alpha" {
		t.Errorf("OwnedSelector = %q", got)
	}
}
