package infra

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Objects of this cluster that others create: Cluster API's and CAPK's (VMs, VMIs,
// MachineDeployments, Machines) and CDI's claims. They carry the cluster-name label
// (Scope.InCluster) but not tenantcloud's ownership marks, so they are read and changed under
// that weaker scope; the callers' own checks (a claim controlled by one of our DataVolumes, a
// VM named by a node ID of this cluster) come on top.

// GetInCluster reads name from the tenant namespace into obj, from the scoped cache. An object
// without this cluster's name label is NotFound, like a missing one.
func (c *Client) GetInCluster(ctx context.Context, name string, obj client.Object) error {
	return c.getInCluster(ctx, c.groupResource(obj), name, obj)
}

// GetInClusterLive is GetInCluster read from the apiserver instead of the cache: for the few
// decisions that must not rest on a cache that may lag behind another replica's writes.
func (c *Client) GetInClusterLive(ctx context.Context, name string, obj client.Object) error {
	return c.get(ctx, c.live, c.groupResource(obj), name, obj, c.scope.InCluster)
}

// ListInClusterLive is ListInCluster read from the apiserver instead of the cache (see
// GetInClusterLive).
func (c *Client) ListInClusterLive(ctx context.Context, list client.ObjectList) error {
	return c.listInCluster(ctx, c.live, list)
}

// ListInCluster fills list with the tenant namespace's objects that carry this cluster's name
// label, from the scoped cache.
func (c *Client) ListInCluster(ctx context.Context, list client.ObjectList) error {
	return c.listInCluster(ctx, c.reader, list)
}

func (c *Client) listInCluster(ctx context.Context, r client.Reader, list client.ObjectList) error {
	if err := r.List(ctx, list, client.InNamespace(c.scope.Namespace),
		client.MatchingLabelsSelector{Selector: c.scope.ClusterSelector()}); err != nil {
		return fmt.Errorf("listing %T in %s: %w", list, c.scope.Namespace, err)
	}
	return c.keep(list, c.scope.InCluster)
}

// PatchInCluster applies patch to obj, which must be an object of this cluster
// (Scope.InCluster, judged on obj as the caller read it); obj receives the result.
func (c *Client) PatchInCluster(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if !c.scope.InCluster(obj) {
		return c.refuse("patch", obj, "not labelled for")
	}
	return c.patch(ctx, obj, patch, opts...)
}

func (c *Client) patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if err := c.client.Patch(ctx, obj, patch, opts...); err != nil {
		return fmt.Errorf("patching %s %s/%s: %w", c.groupResource(obj), obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// keep drops the items of list that fail in.
func (c *Client) keep(list client.ObjectList, in func(client.Object) bool) error {
	items, err := meta.ExtractList(list)
	if err != nil {
		return fmt.Errorf("reading %T: %w", list, err)
	}
	kept := items[:0]
	for _, it := range items {
		if obj, ok := it.(client.Object); ok && in(obj) {
			kept = append(kept, it)
		}
	}
	if len(kept) == len(items) {
		return nil // the usual case: the cache's selectors already kept the rest out
	}
	return meta.SetList(list, kept)
}

// refuse is the error for a write outside the scope: a programming error, never sent.
func (c *Client) refuse(verb string, obj client.Object, why string) error {
	return fmt.Errorf("refusing to %s %s %s/%s: %s cluster %s in namespace %s", verb, c.groupResource(obj),
		obj.GetNamespace(), obj.GetName(), why, c.scope.ClusterName, c.scope.Namespace)
}
