package infra

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// The Client is itself a client.Reader over the scoped cache, for callers that read through
// field indexes they registered with IndexField (pkg/autoscaler's view of MachineDeployments,
// MachineSets and Machines). It is scoped like every other read here rather than trusting the
// cache's selectors alone: only the tenant namespace can be read, and an object without this
// cluster's name label is NotFound like a missing one. Options.NamespaceOnly types, which
// others create unlabelled, can be read by name (the caller follows a reference from an object
// of this cluster) unless labelled for another cluster, and never listed.

var _ client.Reader = (*Client)(nil)

// Get reads key from the scoped cache into obj. opts may ask for no deep copy
// (client.UnsafeDisableDeepCopy): obj is then the cache's own and must not be changed.
func (c *Client) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	gr := c.groupResource(obj)
	if key.Namespace != c.scope.Namespace {
		return notFound(gr, fmt.Sprintf("namespace %q is not the tenant's", key.Namespace))
	}
	in := c.scope.InCluster
	if c.isNamespaceOnly(obj) {
		in = c.labelledForNoOtherCluster
	}
	return c.get(ctx, c.reader, gr, key.Name, obj, in, opts...)
}

// List fills list from the scoped cache with the tenant namespace's objects of this cluster
// that match opts (label and field selectors, including indexes registered with IndexField).
// Asking for another namespace, or for a NamespaceOnly type, is refused.
func (c *Client) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	if lo.Namespace != "" && lo.Namespace != c.scope.Namespace {
		return fmt.Errorf("refusing to list %T in namespace %q: not the tenant namespace %s", list, lo.Namespace, c.scope.Namespace)
	}
	if c.isNamespaceOnly(list) {
		return fmt.Errorf("refusing to list %T: its objects are not labelled with the cluster, so a list would hold other clusters'", list)
	}
	if err := c.reader.List(ctx, list, append(opts, client.InNamespace(c.scope.Namespace))...); err != nil {
		return fmt.Errorf("listing %T in %s: %w", list, c.scope.Namespace, err)
	}
	return c.keep(list, c.scope.InCluster)
}

// IndexField registers a field index on the scoped cache for List's client.MatchingFields.
// It must be called before the cache starts (see Start).
func (c *Client) IndexField(ctx context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	if c.cache == nil {
		return fmt.Errorf("indexing %T by %s: the infra client has no cache", obj, field)
	}
	return c.cache.IndexField(ctx, obj, field, extract)
}

// labelledForNoOtherCluster is the scope of NamespaceOnly types: in the tenant namespace and
// not labelled for another cluster.
func (c *Client) labelledForNoOtherCluster(obj client.Object) bool {
	name, labelled := obj.GetLabels()[LabelClusterName]
	return obj.GetNamespace() == c.scope.Namespace && (!labelled || name == c.scope.ClusterName)
}

// isNamespaceOnly reports whether obj (an object or a list) is of an Options.NamespaceOnly
// type.
func (c *Client) isNamespaceOnly(obj runtime.Object) bool {
	if len(c.namespaceOnly) == 0 {
		return false
	}
	gvk, err := apiutil.GVKForObject(obj, c.client.Scheme())
	if err != nil {
		return false
	}
	gvk.Kind = strings.TrimSuffix(gvk.Kind, "List")
	return c.namespaceOnly[gvk]
}
