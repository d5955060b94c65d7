package infra

import (
	"fmt"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Options adjust the scoped cache that NewWithOptions builds.
type Options struct {
	// NamespaceOnly are object types cached from the tenant namespace WITHOUT the cluster-name
	// label selector, for objects that Cluster API providers create unlabelled (CAPK's
	// KubevirtMachineTemplates, for instance). Unstructured objects must carry their
	// GroupVersionKind. Nothing about such an object proves it belongs to this cluster: callers
	// must establish ownership themselves, e.g. by following a reference from an object that
	// passed InCluster, and must never list them as if they were the tenant's.
	NamespaceOnly []client.Object
	// Trim runs on each object before the cache stores it (after managedFields are dropped, as
	// for every object): a program that knows which fields it reads drops the rest, so a cache
	// of a thousand objects holds only those. It must keep what Scope's checks read
	// (namespace, name, UID, labels, the tenantcloud.io annotations). Objects written back from
	// the cache must be written as patches computed against the cached copy, never as a
	// whole-object update, or the dropped fields would be erased. (One function for every type,
	// rather than per-type cache options: those make the cache look up each type's REST
	// mapping when it is built, so a program could not start while the apiserver is away.)
	Trim func(client.Object)
	// Types, when set, replace NewScheme's API groups (every type any program reads or writes)
	// with these AddToScheme functions, for a program that needs only a few: each group
	// registered costs heap for its type maps and runs its registration code at start.
	Types []func(*runtime.Scheme) error
}

// NewWithOptions is New with per-type cache adjustments. Every other type keeps New's scoping
// (tenant namespace and cluster-name label).
func NewWithOptions(cfg *rest.Config, scope Scope, opts Options) (*Client, error) {
	if err := scope.Validate(); err != nil {
		return nil, err
	}
	var scheme *runtime.Scheme
	var err error
	if len(opts.Types) == 0 {
		scheme, err = NewScheme()
	} else {
		scheme = runtime.NewScheme()
		for _, add := range opts.Types {
			if err = add(scheme); err != nil {
				err = fmt.Errorf("building the infra scheme: %w", err)
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building infra HTTP client: %w", err)
	}
	// One REST mapper for the cache and both clients: each would otherwise discover and hold
	// the infra cluster's API groups on its own (≈1.5 MB of heap each, seen in the ccm's heap
	// profile).
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("building infra REST mapper: %w", err)
	}
	byObject := make(map[client.Object]cache.ByObject, len(opts.NamespaceOnly))
	namespaceOnly := make(map[schema.GroupVersionKind]bool, len(opts.NamespaceOnly))
	for _, obj := range opts.NamespaceOnly {
		gvk, err := apiutil.GVKForObject(obj, scheme)
		if err != nil {
			return nil, fmt.Errorf("namespace-only type %T: %w", obj, err)
		}
		namespaceOnly[gvk] = true
		// A non-nil selector is what stops the cache from defaulting to DefaultLabelSelector;
		// the namespace restriction still applies.
		byObject[obj] = cache.ByObject{
			Namespaces: map[string]cache.Config{scope.Namespace: {LabelSelector: labels.Everything()}},
		}
	}
	transform := cache.TransformStripManagedFields()
	if opts.Trim != nil {
		transform = trimTransform(opts.Trim)
	}
	c, err := cache.New(cfg, cache.Options{
		HTTPClient:           httpClient,
		Scheme:               scheme,
		Mapper:               mapper,
		DefaultNamespaces:    map[string]cache.Config{scope.Namespace: {}},
		DefaultLabelSelector: scope.ClusterSelector(),
		ByObject:             byObject,
		// managedFields are most of a stored object's size once several writers touched it
		// (a VMI's status writers, for one) and nothing here reads them. Writes are unaffected:
		// an Update or patch without managedFields leaves the server's as they are.
		DefaultTransform: transform,
	})
	if err != nil {
		return nil, fmt.Errorf("building infra cache for namespace %s: %w", scope.Namespace, err)
	}
	cl, err := client.New(cfg, client.Options{
		HTTPClient: httpClient,
		Scheme:     scheme,
		Mapper:     mapper,
		Cache:      &client.CacheOptions{Reader: c},
	})
	if err != nil {
		return nil, fmt.Errorf("building infra client: %w", err)
	}
	live, err := client.New(cfg, client.Options{HTTPClient: httpClient, Scheme: scheme, Mapper: mapper})
	if err != nil {
		return nil, fmt.Errorf("building live infra reader: %w", err)
	}
	return &Client{scope: scope, cache: c, reader: c, client: cl, live: live, namespaceOnly: namespaceOnly}, nil
}

// trimTransform is a cache transform that drops managedFields, as the default one does, and
// then applies trim.
func trimTransform(trim func(client.Object)) toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	return func(in any) (any, error) {
		out, err := strip(in)
		if err != nil {
			return out, err
		}
		if obj, ok := out.(client.Object); ok {
			trim(obj)
		}
		return out, nil
	}
}
