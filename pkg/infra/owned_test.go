package infra

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func ownedSvc(ns, name string, mut func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, Labels: testScope.OwnedLabels("ccm"), Annotations: testScope.OwnedAnnotations(),
	}}
	if mut != nil {
		mut(s)
	}
	return s
}

func TestOwnedLookups(t *testing.T) {
	ctx := context.Background()
	c := newFakeClient(t,
		ownedSvc("tenant-a", "ours", nil),
		ownedSvc("tenant-a", "other-component", func(s *corev1.Service) { s.Labels[LabelComponent] = "csi" }),
		ownedSvc("tenant-a", "no-annotation", func(s *corev1.Service) { s.Annotations = nil }),
		ownedSvc("tenant-a", "beta", func(s *corev1.Service) {
			s.Labels[LabelClusterName] = "beta"
			s.Annotations[AnnotationCluster] = "beta"
		}),
		ownedSvc("tenant-b", "ours", nil),
	)
	if err := c.GetOwned(ctx, "ours", &corev1.Service{}); err != nil {
		t.Fatalf("GetOwned(ours): %v", err)
	}
	for _, name := range []string{"no-annotation", "beta", "missing", "a/b"} {
		if err := c.GetOwned(ctx, name, &corev1.Service{}); !apierrors.IsNotFound(err) {
			t.Errorf("GetOwned(%s) = %v, want NotFound", name, err)
		}
	}
	var list corev1.ServiceList
	if err := c.ListOwned(ctx, &list, "ccm", nil); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "ours" || list.Items[0].Namespace != "tenant-a" {
		t.Fatalf("ListOwned = %v", list.Items)
	}
	if err := c.ListOwned(ctx, &list, "ccm", map[string]string{"x": "y"}); err != nil || len(list.Items) != 0 {
		t.Fatalf("ListOwned with extra selector = %v, %v", list.Items, err)
	}

	notOurs := &corev1.Service{}
	if err := c.reader.Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: "no-annotation"}, notOurs); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteOwned(ctx, notOurs); err == nil {
		t.Fatal("DeleteOwned deleted an object it does not own")
	}
	ours := &corev1.Service{}
	if err := c.GetOwned(ctx, "ours", ours); err != nil {
		t.Fatal(err)
	}
	// The UID precondition is enforced by the apiserver (the fake client does not), and
	// exercised by the e2e tests.
	if err := c.DeleteOwned(ctx, ours); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteOwned(ctx, ours); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
}

func TestLauncherPod(t *testing.T) {
	ctx := context.Background()
	ours := map[string]string{LabelClusterName: "alpha"}
	v := vmi("tenant-a", "worker-1", ours)
	v.UID = "vmi-uid"
	pod := func(name string, lbls map[string]string, phase corev1.PodPhase, ips ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: name, Labels: lbls}, Status: corev1.PodStatus{Phase: phase}}
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		return p
	}
	launcher := map[string]string{LabelClusterName: "alpha", kubevirtv1.CreatedByLabel: "vmi-uid"}
	c := newFakeClient(t,
		pod("old", launcher, corev1.PodSucceeded, "10.0.0.1"),
		pod("current", launcher, corev1.PodRunning, "10.0.0.2", "fd00::2"),
		pod("impostor", map[string]string{LabelClusterName: "beta", kubevirtv1.CreatedByLabel: "vmi-uid"}, corev1.PodRunning, "10.9.9.9"),
	)
	got, err := c.LauncherPod(ctx, v)
	if err != nil || got.Name != "current" {
		t.Fatalf("LauncherPod = %v, %v", got, err)
	}
	foreign := vmi("tenant-a", "beta-1", map[string]string{LabelClusterName: "beta"})
	foreign.UID = "vmi-uid"
	if _, err := c.LauncherPod(ctx, foreign); !apierrors.IsNotFound(err) {
		t.Fatalf("LauncherPod of a foreign VMI = %v, want NotFound", err)
	}
}

func TestNodeTopology(t *testing.T) {
	scheme, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	fc := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "infra-a", Labels: map[string]string{
		corev1.LabelTopologyZone: "zone-a", corev1.LabelTopologyRegion: "region-1",
	}}}).Build()
	topo := NewNodeTopologyWithReader(fc)
	zone, region, err := topo.ZoneRegion(context.Background(), "infra-a")
	if err != nil || zone != "zone-a" || region != "region-1" {
		t.Fatalf("ZoneRegion = %q %q %v", zone, region, err)
	}
	if _, _, err := topo.ZoneRegion(context.Background(), "../x"); err == nil {
		t.Fatal("invalid node name accepted")
	}
}
