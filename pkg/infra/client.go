package infra

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Client reads the tenant's infra objects from a cache restricted to the tenant namespace and
// the cluster-name label, and writes through the API. Objects of other namespaces or clusters
// are never even listed, so they cannot leak through a lookup.
type Client struct {
	scope  Scope
	cache  cache.Cache // nil when built over a plain reader (tests)
	reader client.Reader
	client client.Client
	// live reads straight from the API: for the few decisions that must not rest on a cache
	// that may lag behind another replica's writes.
	live client.Reader
	// namespaceOnly are the Options.NamespaceOnly types (see Get).
	namespaceOnly map[schema.GroupVersionKind]bool
	// clusterSeen is set once the tenant's Cluster has been read: its absence afterwards means
	// the tenant was deleted (ClusterOwnerReference).
	clusterSeen atomic.Bool
}

// New builds a Client for scope against the management apiserver at cfg. Run Start and wait
// for WaitForCacheSync before the first lookup.
func New(cfg *rest.Config, scope Scope) (*Client, error) {
	return NewWithOptions(cfg, scope, Options{})
}

// NewWithReader builds a Client whose lookups go to reader and writes to cl; reader must
// already be scoped or the lookups' own checks are the only guard. Used by tests and by callers
// that share a manager's cache.
func NewWithReader(scope Scope, reader client.Reader, cl client.Client) (*Client, error) {
	if err := scope.Validate(); err != nil {
		return nil, err
	}
	return &Client{scope: scope, reader: reader, client: cl, live: cl}, nil
}

// Scope returns the tenant this client serves.
func (c *Client) Scope() Scope { return c.scope }

// Start runs the cache until ctx ends. It blocks, so run it in a goroutine.
func (c *Client) Start(ctx context.Context) error {
	if c.cache == nil {
		return nil
	}
	return c.cache.Start(ctx)
}

// Watch adds handler to the scoped informer of obj's type, creating the informer if needed (it
// runs with the cache, see Start): the handler sees only what the cache holds, the tenant
// namespace's objects labelled with this cluster's name.
func (c *Client) Watch(ctx context.Context, obj client.Object, handler toolscache.ResourceEventHandler) error {
	_, err := c.WatchSynced(ctx, obj, handler)
	return err
}

// WatchSynced is Watch that also returns whether handler has been given every object of the
// informer's first list: WaitForCacheSync tells that the cache has them, not that a handler
// has seen them, and a caller that answers from what its handler collected needs the latter.
func (c *Client) WatchSynced(ctx context.Context, obj client.Object, handler toolscache.ResourceEventHandler) (synced func() bool, err error) {
	if c.cache == nil {
		return nil, fmt.Errorf("watching %T: the infra client has no cache", obj)
	}
	inf, err := c.cache.GetInformer(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("informer for %T: %w", obj, err)
	}
	reg, err := inf.AddEventHandler(handler)
	if err != nil {
		return nil, fmt.Errorf("watching %T: %w", obj, err)
	}
	return reg.HasSynced, nil
}

// WaitForCacheSync blocks until the informers started so far have synced or ctx ends.
func (c *Client) WaitForCacheSync(ctx context.Context) bool {
	if c.cache == nil {
		return true
	}
	return c.cache.WaitForCacheSync(ctx)
}

var (
	vmResource  = kubevirtv1.Resource("virtualmachines")
	vmiResource = kubevirtv1.Resource("virtualmachineinstances")
)

// VM returns the VirtualMachine name of this cluster. A VM that exists but belongs to another
// cluster (or none) is reported as NotFound, indistinguishable from a missing one.
func (c *Client) VM(ctx context.Context, name string) (*kubevirtv1.VirtualMachine, error) {
	vm := &kubevirtv1.VirtualMachine{}
	if err := c.getInCluster(ctx, vmResource, name, vm); err != nil {
		return nil, err
	}
	return vm, nil
}

// VMI returns the VirtualMachineInstance name of this cluster, with the same refusals as VM.
func (c *Client) VMI(ctx context.Context, name string) (*kubevirtv1.VirtualMachineInstance, error) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := c.getInCluster(ctx, vmiResource, name, vmi); err != nil {
		return nil, err
	}
	return vmi, nil
}

// VMForNode resolves a tenant Node's providerID to this cluster's VM. The providerID is
// tenant-controlled: a malformed one or one naming a foreign VM is NotFound.
func (c *Client) VMForNode(ctx context.Context, providerID string) (*kubevirtv1.VirtualMachine, error) {
	name, err := VMNameFromProviderID(providerID)
	if err != nil {
		return nil, notFound(vmResource, err.Error())
	}
	return c.VM(ctx, name)
}

func (c *Client) getInCluster(ctx context.Context, gr schema.GroupResource, name string, obj client.Object) error {
	// The cache is already label-scoped; checking again keeps the invariant independent of
	// how the reader was built.
	return c.get(ctx, c.reader, gr, name, obj, c.scope.InCluster)
}

// get reads name from the tenant namespace through r and answers NotFound, like for a missing
// object, when the name is malformed or the object fails in.
func (c *Client) get(ctx context.Context, r client.Reader, gr schema.GroupResource, name string, obj client.Object, in func(client.Object) bool, opts ...client.GetOption) error {
	if err := ValidateName(name); err != nil {
		return notFound(gr, err.Error())
	}
	if err := r.Get(ctx, client.ObjectKey{Namespace: c.scope.Namespace, Name: name}, obj, opts...); err != nil {
		if apierrors.IsNotFound(err) {
			return apierrors.NewNotFound(gr, name)
		}
		return fmt.Errorf("getting %s %s/%s: %w", gr, c.scope.Namespace, name, err)
	}
	if !in(obj) {
		return apierrors.NewNotFound(gr, name)
	}
	return nil
}

// notFound is a NotFound status whose message says why, for inputs that cannot name an
// object of this tenant at all.
func notFound(gr schema.GroupResource, msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusNotFound,
		Reason:  metav1.StatusReasonNotFound,
		Details: &metav1.StatusDetails{Group: gr.Group, Kind: gr.Resource},
		Message: fmt.Sprintf("%s: %s", gr, msg),
	}}
}
