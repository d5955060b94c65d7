package cdi

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The snapshot.storage.k8s.io types are not in go.mod, so the simulator handles them as
// unstructured objects through these accessors.
var (
	snapshotGVK        = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshot"}
	snapshotContentGVK = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotContent"}
	snapshotClassGVK   = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotClass"}
)

func newSnapshot() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(snapshotGVK)
	return u
}

func newUnstructured(gvk schema.GroupVersionKind) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	return u
}

// volumeSnapshot wraps an unstructured VolumeSnapshot.
type volumeSnapshot struct{ *unstructured.Unstructured }

func (v volumeSnapshot) str(path ...string) string {
	s, _, _ := unstructured.NestedString(v.Object, path...)
	return s
}

func (v volumeSnapshot) sourceClaim() string {
	return v.str("spec", "source", "persistentVolumeClaimName")
}
func (v volumeSnapshot) className() string { return v.str("spec", "volumeSnapshotClassName") }
func (v volumeSnapshot) contentName() string {
	return v.str("status", "boundVolumeSnapshotContentName")
}
func (v volumeSnapshot) errorMessage() string {
	return v.str("status", "error", "message")
}

func (v volumeSnapshot) hasStatus() bool {
	_, ok := v.Object["status"]
	return ok
}

func (v volumeSnapshot) readyToUse() bool {
	b, _, _ := unstructured.NestedBool(v.Object, "status", "readyToUse")
	return b
}

func (v volumeSnapshot) restoreSize() (resource.Quantity, bool) {
	s := v.str("status", "restoreSize")
	if s == "" {
		return resource.Quantity{}, false
	}
	q, err := resource.ParseQuantity(s)
	return q, err == nil
}

// snapshot returns the VolumeSnapshot at key, nil if it does not exist.
func (s *sim) snapshot(ctx context.Context, key types.NamespacedName) (*volumeSnapshot, error) {
	u := newSnapshot()
	if err := s.Get(ctx, key, u); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("getting VolumeSnapshot %s: %w", key, err)
	}
	return &volumeSnapshot{u}, nil
}

// snapshotSource is the driver and source volume mode recorded in a snapshot's content.
func (s *sim) snapshotSource(ctx context.Context, snap *volumeSnapshot) (string, corev1.PersistentVolumeMode, error) {
	content := newUnstructured(snapshotContentGVK)
	if err := s.Get(ctx, client.ObjectKey{Name: snap.contentName()}, content); err != nil {
		return "", "", fmt.Errorf("getting VolumeSnapshotContent %q of snapshot %s/%s: %w", snap.contentName(), snap.GetNamespace(), snap.GetName(), err)
	}
	driver, _, _ := unstructured.NestedString(content.Object, "spec", "driver")
	mode, _, _ := unstructured.NestedString(content.Object, "spec", "sourceVolumeMode")
	return driver, corev1.PersistentVolumeMode(mode), nil
}

// snapshotClassDrivers lists the drivers that have a VolumeSnapshotClass.
func (s *sim) snapshotClassDrivers(ctx context.Context) ([]string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(snapshotClassGVK.GroupVersion().WithKind("VolumeSnapshotClassList"))
	if err := s.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing VolumeSnapshotClasses: %w", err)
	}
	var drivers []string
	for _, c := range list.Items {
		if d, _, _ := unstructured.NestedString(c.Object, "driver"); d != "" {
			drivers = append(drivers, d)
		}
	}
	return drivers, nil
}
