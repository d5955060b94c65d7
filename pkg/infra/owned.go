package infra

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// GetOwned reads the object name of the tenant namespace into obj. An object tenantcloud did
// not create for this tenant (see Scope.Owns) is reported as NotFound, like a missing one, so
// callers can never update or delete it by mistake.
func (c *Client) GetOwned(ctx context.Context, name string, obj client.Object) error {
	gr := c.groupResource(obj)
	if err := ValidateName(name); err != nil {
		return notFound(gr, err.Error())
	}
	if err := c.reader.Get(ctx, client.ObjectKey{Namespace: c.scope.Namespace, Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return apierrors.NewNotFound(gr, name)
		}
		return fmt.Errorf("getting %s %s/%s: %w", gr, c.scope.Namespace, name, err)
	}
	if !c.scope.Owns(obj) {
		return apierrors.NewNotFound(gr, name)
	}
	return nil
}

// ListOwned fills list with the objects component created for this tenant whose labels also
// match extra (may be nil). Items that fail Scope.Owns are dropped.
func (c *Client) ListOwned(ctx context.Context, list client.ObjectList, component string, extra map[string]string) error {
	sel := client.MatchingLabels{LabelClusterName: c.scope.ClusterName, LabelManagedBy: ManagedByValue, LabelComponent: component}
	for k, v := range extra {
		sel[k] = v
	}
	if err := c.reader.List(ctx, list, client.InNamespace(c.scope.Namespace), sel); err != nil {
		return fmt.Errorf("listing %T in %s: %w", list, c.scope.Namespace, err)
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return fmt.Errorf("reading %T: %w", list, err)
	}
	kept := items[:0]
	for _, it := range items {
		if obj, ok := it.(client.Object); ok && c.scope.Owns(obj) {
			kept = append(kept, it)
		}
	}
	return meta.SetList(list, kept)
}

// DeleteOwned deletes obj if this tenant owns it. The UID precondition makes sure an object
// that was deleted and re-created (possibly by someone else) since obj was read is left alone.
// A NotFound from the API counts as success.
func (c *Client) DeleteOwned(ctx context.Context, obj client.Object) error {
	gr := c.groupResource(obj)
	if !c.scope.Owns(obj) {
		return fmt.Errorf("refusing to delete %s %s/%s: not created by tenantcloud for cluster %s",
			gr, obj.GetNamespace(), obj.GetName(), c.scope.ClusterName)
	}
	uid := obj.GetUID()
	err := c.client.Delete(ctx, obj, client.Preconditions{UID: &uid})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s %s/%s: %w", gr, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// groupResource names obj's type for errors; it falls back to the Go type when the scheme
// does not know it.
func (c *Client) groupResource(obj runtime.Object) schema.GroupResource {
	gvk, err := c.client.GroupVersionKindFor(obj)
	if err != nil {
		return schema.GroupResource{Resource: fmt.Sprintf("%T", obj)}
	}
	return schema.GroupResource{Group: gvk.Group, Resource: gvk.Kind}
}
