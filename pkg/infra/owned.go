package infra

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// GetOwned reads the object name of the tenant namespace into obj. An object tenantcloud did
// not create for this tenant (see Scope.Owns) is reported as NotFound, like a missing one, so
// callers can never update or delete it by mistake.
func (c *Client) GetOwned(ctx context.Context, name string, obj client.Object) error {
	return c.get(ctx, c.reader, c.groupResource(obj), name, obj, c.scope.Owns)
}

// ListOwned fills list with the objects component created for this tenant whose labels also
// match extra (may be nil). Items that fail Scope.Owns are dropped. opts may add
// client.UnsafeDisableDeepCopy for a read-only pass over many objects: the items then share
// their maps, slices and pointers with the cache and must not be changed.
func (c *Client) ListOwned(ctx context.Context, list client.ObjectList, component string, extra map[string]string, opts ...client.ListOption) error {
	sel := client.MatchingLabels{LabelClusterName: c.scope.ClusterName, LabelManagedBy: ManagedByValue, LabelComponent: component}
	for k, v := range extra {
		sel[k] = v
	}
	opts = append([]client.ListOption{client.InNamespace(c.scope.Namespace), sel}, opts...)
	if err := c.reader.List(ctx, list, opts...); err != nil {
		return fmt.Errorf("listing %T in %s: %w", list, c.scope.Namespace, err)
	}
	return c.keep(list, c.scope.Owns)
}

// CreateOwned creates obj, which must carry the ownership marks of Scope.Owns in the tenant
// namespace: nothing tenantcloud creates can escape its own later checks. Errors from the API
// come back unwrapped, so callers can tell AlreadyExists (a retry, or a name taken).
func (c *Client) CreateOwned(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if !c.scope.Owns(obj) {
		return c.refuse("create", obj, "not marked as created by tenantcloud for")
	}
	return c.client.Create(ctx, obj, opts...)
}

// UpdateOwned writes obj, which must still carry the ownership marks of Scope.Owns: an
// update cannot hand one of our objects over to anyone else. Errors from the API come back
// unwrapped (a Conflict is retried by the caller's next sync).
func (c *Client) UpdateOwned(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if !c.scope.Owns(obj) {
		return c.refuse("update", obj, "not marked as created by tenantcloud for")
	}
	return c.client.Update(ctx, obj, opts...)
}

// PatchOwned applies patch to obj if this tenant owns it (Scope.Owns, judged on obj as the
// caller read it); obj receives the result.
func (c *Client) PatchOwned(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if !c.scope.Owns(obj) {
		return c.refuse("patch", obj, "not created by tenantcloud for")
	}
	return c.patch(ctx, obj, patch, opts...)
}

// GetNamed reads name from the tenant namespace whoever created it, for the name-collision
// check before a create: typed objects come from the scoped cache, unstructured ones (the
// VolumeSnapshot) from the apiserver, as the client reads them. The caller may only refuse
// on what it finds unless Scope.Owns holds: it never acts on another's object.
func (c *Client) GetNamed(ctx context.Context, name string, obj client.Object) error {
	gr := c.groupResource(obj)
	if err := ValidateName(name); err != nil {
		return notFound(gr, err.Error())
	}
	return c.client.Get(ctx, client.ObjectKey{Namespace: c.scope.Namespace, Name: name}, obj)
}

// DeleteOwned deletes obj if this tenant owns it. The UID precondition makes sure an object
// that was deleted and re-created (possibly by someone else) since obj was read is left alone.
// A NotFound from the API counts as success. opts may add, say, a propagation policy.
func (c *Client) DeleteOwned(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	gr := c.groupResource(obj)
	if !c.scope.Owns(obj) {
		return fmt.Errorf("refusing to delete %s %s/%s: not created by tenantcloud for cluster %s",
			gr, obj.GetNamespace(), obj.GetName(), c.scope.ClusterName)
	}
	uid := obj.GetUID()
	err := c.client.Delete(ctx, obj, append([]client.DeleteOption{client.Preconditions{UID: &uid}}, opts...)...)
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
