package infra

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Volume objects of a tenant: the DataVolumes csi-controller creates, the claims CDI creates
// for them, and VolumeSnapshots of those claims. A volume handle or snapshot ID comes from
// the tenant (a PV's volumeHandle is tenant-writable), so every lookup below answers NotFound
// for anything tenantcloud did not create for this cluster, exactly as for a missing object.

// VolumeSnapshotGVK is snapshot.storage.k8s.io/v1 VolumeSnapshot. The external-snapshotter
// client types are not a dependency, so snapshots are handled as unstructured objects.
var VolumeSnapshotGVK = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshot"}

var (
	dataVolumeResource     = cdiv1.Resource("datavolumes")
	claimResource          = corev1.Resource("persistentvolumeclaims")
	volumeSnapshotResource = schema.GroupResource{Group: VolumeSnapshotGVK.Group, Resource: "volumesnapshots"}
)

// NewVolumeSnapshot returns an empty unstructured VolumeSnapshot (GVK set), for Get, List
// element types and informers.
func NewVolumeSnapshot() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(VolumeSnapshotGVK)
	return u
}

// NewVolumeSnapshotList returns an empty unstructured VolumeSnapshotList.
func NewVolumeSnapshotList() *unstructured.UnstructuredList {
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(VolumeSnapshotGVK.GroupVersion().WithKind(VolumeSnapshotGVK.Kind + "List"))
	return l
}

// OwnedBy reports whether obj was created by tenantcloud's component for this tenant: Owns
// plus the component label, so one program never acts on another's objects.
func (s Scope) OwnedBy(obj client.Object, component string) bool {
	return s.Owns(obj) && obj.GetLabels()[LabelComponent] == component
}

// OwnedDataVolume returns the DataVolume name if component created it for this tenant. A
// missing DataVolume and one that is not ours (another cluster's, a VM root disk CAPK made, an
// operator's) are both NotFound, with the same message.
func (c *Client) OwnedDataVolume(ctx context.Context, name, component string) (*cdiv1.DataVolume, error) {
	dv := &cdiv1.DataVolume{}
	if err := c.getOwned(ctx, dataVolumeResource, name, component, dv); err != nil {
		return nil, err
	}
	return dv, nil
}

// ClaimOf returns the PersistentVolumeClaim CDI created for dv: same namespace, the name in
// dv.status.claimName (or the DataVolume's name), and controlled by dv itself (owner reference
// with dv's UID). A claim that merely carries the name is NotFound: a look-alike must never
// stand in for the volume's storage.
func (c *Client) ClaimOf(ctx context.Context, dv *cdiv1.DataVolume) (*corev1.PersistentVolumeClaim, error) {
	name := dv.Status.ClaimName
	if name == "" {
		name = dv.Name
	}
	if err := ValidateName(name); err != nil {
		return nil, notFound(claimResource, err.Error())
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := c.reader.Get(ctx, client.ObjectKey{Namespace: c.scope.Namespace, Name: name}, pvc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, apierrors.NewNotFound(claimResource, name)
		}
		return nil, fmt.Errorf("getting %s %s/%s: %w", claimResource, c.scope.Namespace, name, err)
	}
	owner := metav1.GetControllerOf(pvc)
	if pvc.Namespace != dv.Namespace || owner == nil || owner.UID != dv.UID || owner.Kind != "DataVolume" {
		return nil, apierrors.NewNotFound(claimResource, name)
	}
	return pvc, nil
}

// OwnedVolumeSnapshot returns the VolumeSnapshot name if component created it for this tenant;
// otherwise NotFound, as OwnedDataVolume.
func (c *Client) OwnedVolumeSnapshot(ctx context.Context, name, component string) (*unstructured.Unstructured, error) {
	vs := NewVolumeSnapshot()
	if err := c.getOwned(ctx, volumeSnapshotResource, name, component, vs); err != nil {
		return nil, err
	}
	return vs, nil
}

func (c *Client) getOwned(ctx context.Context, gr schema.GroupResource, name, component string, obj client.Object) error {
	return c.get(ctx, c.reader, gr, name, obj, func(o client.Object) bool { return c.scope.OwnedBy(o, component) })
}
