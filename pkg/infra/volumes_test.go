package infra

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

func dv(ns, name string, lbls, ann map[string]string) *cdiv1.DataVolume {
	return &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls, Annotations: ann,
		UID: types.UID("uid-" + name)}}
}

func TestOwnedDataVolume(t *testing.T) {
	ours := testScope.OwnedLabels("csi-controller")
	ann := testScope.OwnedAnnotations()
	other := Scope{Namespace: "tenant-a", ClusterName: "beta"}
	c := newFakeClient(t,
		dv("tenant-a", "tc-ours", ours, ann),
		dv("tenant-a", "tc-beta", other.OwnedLabels("csi-controller"), other.OwnedAnnotations()),
		dv("tenant-a", "rootdisk", map[string]string{LabelClusterName: "alpha"}, nil),
		dv("tenant-a", "tc-ccm", testScope.OwnedLabels("ccm"), ann),
		dv("tenant-a", "tc-noann", ours, nil),
		dv("tenant-b", "tc-otherns", ours, ann),
	)
	ctx := context.Background()
	if got, err := c.OwnedDataVolume(ctx, "tc-ours", "csi-controller"); err != nil || got.Name != "tc-ours" {
		t.Fatalf("own DataVolume: %v, %v", got, err)
	}
	for _, name := range []string{"tc-beta", "rootdisk", "tc-ccm", "tc-noann", "tc-otherns", "missing", "../rootdisk", "Bad"} {
		if _, err := c.OwnedDataVolume(ctx, name, "csi-controller"); !apierrors.IsNotFound(err) {
			t.Errorf("OwnedDataVolume(%q) = %v, want NotFound", name, err)
		}
	}
}

func TestClaimOf(t *testing.T) {
	owner := dv("tenant-a", "tc-ours", testScope.OwnedLabels("csi-controller"), testScope.OwnedAnnotations())
	ctrl := true
	claim := func(name string, uid types.UID, kind string) *corev1.PersistentVolumeClaim {
		p := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: name}}
		if uid != "" {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "cdi.kubevirt.io/v1beta1", Kind: kind, Name: owner.Name, UID: uid, Controller: &ctrl}}
		}
		return p
	}
	tests := []struct {
		name  string
		claim *corev1.PersistentVolumeClaim
		ok    bool
	}{
		{"controlled by the DataVolume", claim("tc-ours", owner.UID, "DataVolume"), true},
		{"same name, no owner", claim("tc-ours", "", ""), false},
		{"owned by another DataVolume of that name (recreated)", claim("tc-ours", "uid-old", "DataVolume"), false},
		{"owned by something else", claim("tc-ours", owner.UID, "VirtualMachine"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeClient(t, owner, tt.claim)
			got, err := c.ClaimOf(context.Background(), owner)
			if tt.ok && (err != nil || got.Name != "tc-ours") {
				t.Fatalf("ClaimOf = %v, %v", got, err)
			}
			if !tt.ok && !apierrors.IsNotFound(err) {
				t.Fatalf("ClaimOf = %v, %v; want NotFound", got, err)
			}
		})
	}
	if _, err := newFakeClient(t, owner).ClaimOf(context.Background(), owner); !apierrors.IsNotFound(err) {
		t.Errorf("missing claim: %v", err)
	}
}
