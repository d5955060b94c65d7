package infra

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestHasClusterOwner(t *testing.T) {
	ref := func(apiVersion, kind, name string) metav1.OwnerReference {
		return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: "u"}
	}
	for _, tc := range []struct {
		name string
		refs []metav1.OwnerReference
		want bool
	}{
		{"none", nil, false},
		{"ours", []metav1.OwnerReference{ref("cluster.x-k8s.io/v1beta2", "Cluster", "alpha")}, true},
		{"older API version of the same group", []metav1.OwnerReference{ref("cluster.x-k8s.io/v1beta1", "Cluster", "alpha")}, true},
		{"beside another owner", []metav1.OwnerReference{ref("v1", "Service", "x"), ref("cluster.x-k8s.io/v1beta2", "Cluster", "alpha")}, true},
		{"another cluster", []metav1.OwnerReference{ref("cluster.x-k8s.io/v1beta2", "Cluster", "beta")}, false},
		{"another group's Cluster", []metav1.OwnerReference{ref("infrastructure.cluster.x-k8s.io/v1alpha1", "Cluster", "alpha")}, false},
		{"another kind", []metav1.OwnerReference{ref("cluster.x-k8s.io/v1beta2", "Machine", "alpha")}, false},
		{"unparsable apiVersion", []metav1.OwnerReference{ref("a/b/c", "Cluster", "alpha")}, false},
	} {
		obj := &corev1.Service{ObjectMeta: metav1.ObjectMeta{OwnerReferences: tc.refs}}
		if got := HasClusterOwner(obj, "alpha"); got != tc.want {
			t.Errorf("%s: HasClusterOwner = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAddClusterOwner(t *testing.T) {
	ctx := context.Background()
	ours := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "alpha", UID: "alpha-uid"}}
	beta := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "beta", UID: "beta-uid"}}
	elsewhere := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-b", Name: "alpha", UID: "other-ns-uid"}}

	c := newFakeClient(t, ours, beta, elsewhere)
	obj := &corev1.Service{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "x", UID: "x"}}}}
	changed, err := c.AddClusterOwner(ctx, obj)
	if err != nil || !changed {
		t.Fatalf("AddClusterOwner = %v, %v; want a change", changed, err)
	}
	want := *ClusterOwner("alpha", "alpha-uid")
	if got := obj.OwnerReferences; len(got) != 2 || got[1] != want {
		t.Fatalf("owner references = %+v, want the Service's and %+v", got, want)
	}
	if changed, err := c.AddClusterOwner(ctx, obj); err != nil || changed {
		t.Fatalf("second AddClusterOwner = %v, %v; want no change", changed, err)
	}

	// No Cluster of this tenant (only beta's in the namespace, alpha's elsewhere): no reference.
	c = newFakeClient(t, beta, elsewhere)
	obj = &corev1.Service{}
	if changed, err := c.AddClusterOwner(ctx, obj); err != nil || changed || len(obj.OwnerReferences) != 0 {
		t.Fatalf("without a Cluster: AddClusterOwner = %v, %v, refs %v; want nothing", changed, err, obj.OwnerReferences)
	}
}

// A Cluster being deleted, or gone after it was seen, refuses new objects: created then they
// would have no owner to be collected with.
func TestClusterOwnerTenantDeleted(t *testing.T) {
	ctx := context.Background()
	cl := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "alpha", UID: "alpha-uid",
		Finalizers: []string{"cluster.cluster.x-k8s.io"}}}
	c := newFakeClient(t, cl)
	if ref, err := c.ClusterOwnerReference(ctx); err != nil || ref == nil {
		t.Fatalf("ClusterOwnerReference = %v, %v", ref, err)
	}
	if err := c.client.Delete(ctx, cl); err != nil { // the finalizer keeps it, terminating
		t.Fatal(err)
	}
	if _, err := c.AddClusterOwner(ctx, &corev1.Service{}); !errors.Is(err, ErrTenantDeleted) {
		t.Fatalf("Cluster being deleted: AddClusterOwner error = %v, want ErrTenantDeleted", err)
	}
	if err := c.client.Get(ctx, client.ObjectKeyFromObject(cl), cl); err != nil {
		t.Fatal(err)
	}
	cl.Finalizers = nil
	if err := c.client.Update(ctx, cl); err != nil { // the last finalizer off: gone
		t.Fatal(err)
	}
	if _, err := c.ClusterOwnerReference(ctx); !errors.Is(err, ErrTenantDeleted) {
		t.Fatalf("Cluster gone after it was seen: error = %v, want ErrTenantDeleted", err)
	}
	// An object that already has its reference needs no lookup and no refusal.
	has := &corev1.Service{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{*ClusterOwner("alpha", "alpha-uid")}}}
	if changed, err := c.AddClusterOwner(ctx, has); err != nil || changed {
		t.Fatalf("already owned: AddClusterOwner = %v, %v", changed, err)
	}
}
