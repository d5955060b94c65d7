package infra

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestInClusterAccess(t *testing.T) {
	ctx := context.Background()
	ours := map[string]string{LabelClusterName: "alpha"}
	c := newFakeClient(t,
		vm("tenant-a", "worker-1", ours),
		vm("tenant-a", "beta-worker", map[string]string{LabelClusterName: "beta"}),
		vm("tenant-a", "unlabelled", nil),
		vm("tenant-b", "worker-1", ours),
	)
	if err := c.GetInCluster(ctx, "worker-1", &kubevirtv1.VirtualMachine{}); err != nil {
		t.Fatalf("GetInCluster(worker-1): %v", err)
	}
	for _, name := range []string{"beta-worker", "unlabelled", "missing", "../x"} {
		if err := c.GetInCluster(ctx, name, &kubevirtv1.VirtualMachine{}); !apierrors.IsNotFound(err) {
			t.Errorf("GetInCluster(%s) = %v, want NotFound", name, err)
		}
	}
	var list kubevirtv1.VirtualMachineList
	if err := c.ListInCluster(ctx, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "worker-1" || list.Items[0].Namespace != "tenant-a" {
		t.Fatalf("ListInCluster = %v", list.Items)
	}

	// Patches land only on objects of this cluster, judged on the object as read.
	foreign := &kubevirtv1.VirtualMachine{}
	if err := c.reader.Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: "beta-worker"}, foreign); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(foreign.DeepCopy())
	foreign.Annotations = map[string]string{"x": "y"}
	if err := c.PatchInCluster(ctx, foreign, patch); err == nil || !strings.Contains(err.Error(), "refusing to patch") {
		t.Fatalf("PatchInCluster of another cluster's VM = %v, want a refusal", err)
	}
	own := &kubevirtv1.VirtualMachine{}
	if err := c.GetInCluster(ctx, "worker-1", own); err != nil {
		t.Fatal(err)
	}
	patch = client.MergeFrom(own.DeepCopy())
	own.Annotations = map[string]string{"x": "y"}
	if err := c.PatchInCluster(ctx, own, patch); err != nil {
		t.Fatalf("PatchInCluster: %v", err)
	}
	got := &kubevirtv1.VirtualMachine{}
	if err := c.GetInCluster(ctx, "worker-1", got); err != nil || got.Annotations["x"] != "y" {
		t.Fatalf("after PatchInCluster: %v, %v", got.Annotations, err)
	}
}

func TestOwnedWrites(t *testing.T) {
	ctx := context.Background()
	c := newFakeClient(t, ownedSvc("tenant-a", "ours", nil),
		ownedSvc("tenant-a", "no-annotation", func(s *corev1.Service) { s.Annotations = nil }))
	for name, obj := range map[string]*corev1.Service{
		"unmarked":      {ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "unmarked"}},
		"other cluster": ownedSvc("tenant-a", "beta", func(s *corev1.Service) { s.Labels[LabelClusterName] = "beta" }),
		"other ns":      ownedSvc("tenant-b", "elsewhere", nil),
	} {
		if err := c.CreateOwned(ctx, obj); err == nil || !strings.Contains(err.Error(), "refusing to create") {
			t.Errorf("CreateOwned(%s) = %v, want a refusal", name, err)
		}
	}
	created := ownedSvc("tenant-a", "new", nil)
	if err := c.CreateOwned(ctx, created); err != nil {
		t.Fatalf("CreateOwned: %v", err)
	}
	if err := c.CreateOwned(ctx, ownedSvc("tenant-a", "new", nil)); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("CreateOwned again = %v, want AlreadyExists (unwrapped)", err)
	}

	notOurs := &corev1.Service{}
	if err := c.reader.Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: "no-annotation"}, notOurs); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(notOurs.DeepCopy())
	notOurs.Spec.ExternalName = "x"
	if err := c.PatchOwned(ctx, notOurs, patch); err == nil || !strings.Contains(err.Error(), "refusing to patch") {
		t.Fatalf("PatchOwned of an object we do not own = %v, want a refusal", err)
	}
	if err := c.UpdateOwned(ctx, notOurs); err == nil || !strings.Contains(err.Error(), "refusing to update") {
		t.Fatalf("UpdateOwned of an object we do not own = %v, want a refusal", err)
	}
	ours := &corev1.Service{}
	if err := c.GetOwned(ctx, "ours", ours); err != nil {
		t.Fatal(err)
	}
	handedOver := ours.DeepCopy()
	handedOver.Annotations[AnnotationCluster] = "beta"
	if err := c.UpdateOwned(ctx, handedOver); err == nil || !strings.Contains(err.Error(), "refusing to update") {
		t.Fatalf("UpdateOwned that drops our marks = %v, want a refusal", err)
	}
	patch = client.MergeFrom(ours.DeepCopy())
	ours.Annotations["x"] = "y"
	if err := c.PatchOwned(ctx, ours, patch); err != nil {
		t.Fatalf("PatchOwned: %v", err)
	}

	// GetNamed sees the name whoever holds it (the collision check), never outside the
	// namespace, and refuses a malformed name without reading.
	if err := c.GetNamed(ctx, "no-annotation", &corev1.Service{}); err != nil {
		t.Fatalf("GetNamed of another's object: %v", err)
	}
	for _, name := range []string{"elsewhere", "../x"} {
		if err := c.GetNamed(ctx, name, &corev1.Service{}); !apierrors.IsNotFound(err) {
			t.Errorf("GetNamed(%s) = %v, want NotFound", name, err)
		}
	}
}

func TestWatchNeedsCache(t *testing.T) {
	c := newFakeClient(t)
	if err := c.Watch(context.Background(), &corev1.Service{}, toolscache.ResourceEventHandlerFuncs{}); err == nil {
		t.Fatal("Watch on a reader-backed client succeeded")
	}
}

func TestScaleAndEvents(t *testing.T) {
	ctx := context.Background()
	ours := map[string]string{LabelClusterName: "alpha"}
	c := newFakeClient(t, vm("tenant-a", "worker-1", ours), vm("tenant-a", "beta-worker", map[string]string{LabelClusterName: "beta"}))
	foreign := vm("tenant-a", "beta-worker", map[string]string{LabelClusterName: "beta"})
	if _, err := c.Scale(ctx, foreign); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("Scale of another cluster's object = %v, want a refusal", err)
	}
	if err := c.UpdateScale(ctx, foreign, nil); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("UpdateScale of another cluster's object = %v, want a refusal", err)
	}
	for name, ev := range map[string]*corev1.Event{
		"other namespace": {ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-b", Name: "e1"},
			InvolvedObject: corev1.ObjectReference{Namespace: "tenant-b", Name: "x"}},
		"about another namespace's object": {ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "e2"},
			InvolvedObject: corev1.ObjectReference{Namespace: "tenant-b", Name: "x"}},
	} {
		if err := c.CreateEvent(ctx, ev); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("CreateEvent (%s) = %v, want a refusal", name, err)
		}
	}
	if err := c.CreateEvent(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "e3"},
		InvolvedObject: corev1.ObjectReference{Namespace: "tenant-a", Name: "worker-1"}}); err != nil {
		t.Fatalf("CreateEvent: %v", err)
	}
	// The live reads keep the cluster scope (the fake client serves both paths).
	if err := c.GetInClusterLive(ctx, "beta-worker", &kubevirtv1.VirtualMachine{}); !apierrors.IsNotFound(err) {
		t.Errorf("GetInClusterLive(beta-worker) = %v, want NotFound", err)
	}
	var list kubevirtv1.VirtualMachineList
	if err := c.ListInClusterLive(ctx, &list); err != nil || len(list.Items) != 1 || list.Items[0].Name != "worker-1" {
		t.Errorf("ListInClusterLive = %v, %v", list.Items, err)
	}
}
