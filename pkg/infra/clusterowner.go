package infra

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// KindCluster is the Cluster API kind every infra object tenantcloud creates is owned by.
const KindCluster = "Cluster"

// ClusterOwnerReference returns an owner reference to the tenant's Cluster API Cluster (named
// like the cluster, in the infra namespace), so the management cluster's garbage collector
// deletes what tenantcloud created for the tenant once the Cluster is deleted. It is nil when
// no such Cluster exists (a tenant not run by Cluster API, or one being torn down): the object
// is then created without it and gets it when it is next reconciled.
//
// The Cluster is read live (one GET, verb get on clusters.cluster.x-k8s.io), never from a
// cache: a Cluster deleted and re-created under the same name has a new UID, and a reference
// to the old one would make the garbage collector delete the new object at once. Only callers
// about to create an object, or repairing one without the reference, ask.
//
// A Cluster being deleted, or gone after this Client has seen it, is ErrTenantDeleted: an
// object created then would have no owner left to be collected with (the ccm's drift repair
// would otherwise re-create the infra Services the garbage collector just removed).
func (c *Client) ClusterOwnerReference(ctx context.Context) (*metav1.OwnerReference, error) {
	cl := &metav1.PartialObjectMetadata{}
	cl.SetGroupVersionKind(clusterv1.GroupVersion.WithKind(KindCluster))
	key := client.ObjectKey{Namespace: c.scope.Namespace, Name: c.scope.ClusterName}
	err := c.live.Get(ctx, key, cl)
	switch {
	case apierrors.IsNotFound(err) && c.clusterSeen.Load():
		return nil, fmt.Errorf("Cluster %s: %w", key, ErrTenantDeleted)
	case apierrors.IsNotFound(err):
		klog.FromContext(ctx).V(2).Info("No Cluster object for this tenant: created objects get no owner reference",
			"cluster", klog.KRef(key.Namespace, key.Name))
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("getting Cluster %s for owner references (needs get on clusters.cluster.x-k8s.io): %w", key, err)
	}
	c.clusterSeen.Store(true)
	if cl.DeletionTimestamp != nil {
		return nil, fmt.Errorf("Cluster %s is being deleted: %w", key, ErrTenantDeleted)
	}
	return ClusterOwner(c.scope.ClusterName, cl.UID), nil
}

// ErrTenantDeleted refuses to create infra objects for a tenant whose Cluster is being deleted
// or is gone.
var ErrTenantDeleted = errors.New("the tenant's Cluster is deleted: no infra objects are created for it")

// ClusterOwner is the owner reference to the Cluster name with uid. It is neither a controller
// reference (Cluster API controllers own nothing of ours) nor blocking: blockOwnerDeletion would
// need update rights on clusters/finalizers and would hold the Cluster's foreground deletion
// on objects whose own deletion (a DataVolume's storage) may take long.
func ClusterOwner(name string, uid types.UID) *metav1.OwnerReference {
	return &metav1.OwnerReference{
		APIVersion: clusterv1.GroupVersion.String(),
		Kind:       KindCluster,
		Name:       name,
		UID:        uid,
	}
}

// HasClusterOwner reports whether obj already carries an owner reference to the Cluster name,
// whatever its UID: one to an earlier Cluster of that name has already made the garbage
// collector delete obj, so there is nothing to repair.
func HasClusterOwner(obj metav1.Object, name string) bool {
	for _, r := range obj.GetOwnerReferences() {
		if r.Kind == KindCluster && r.Name == name && groupOf(r.APIVersion) == clusterv1.GroupVersion.Group {
			return true
		}
	}
	return false
}

// AddClusterOwner adds an owner reference to the tenant's Cluster to obj unless it has one or
// the Cluster does not exist, and reports whether obj changed. Callers write obj afterwards.
func (c *Client) AddClusterOwner(ctx context.Context, obj client.Object) (bool, error) {
	if HasClusterOwner(obj, c.scope.ClusterName) {
		return false, nil
	}
	ref, err := c.ClusterOwnerReference(ctx)
	if err != nil || ref == nil {
		return false, err
	}
	obj.SetOwnerReferences(append(obj.GetOwnerReferences(), *ref))
	return true, nil
}

func groupOf(apiVersion string) string {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return ""
	}
	return gv.Group
}
