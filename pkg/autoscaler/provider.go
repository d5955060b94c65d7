package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Config is what a Provider is built from.
type Config struct {
	// Infra is the tenant's scoped infra client. Its cache must not be started yet (indexes are
	// added to it) and must cache KubevirtMachineTemplates by namespace only; see
	// InfraOptions.
	Infra *infra.Client
	// Nodes is a cache of the tenant cluster's Nodes (see NewNodeCache), not yet started. It is
	// optional: without it only Machine.status.nodeRef tells a registered Machine.
	Nodes cache.Cache
	// NodeGroupSelector further restricts which MachineDeployments are node groups.
	NodeGroupSelector map[string]string
	// CacheWait bounds how long a scaling call waits for the cache to show its own writes
	// before returning (the proto asks such calls to wait until the size is updated).
	// Default 10s.
	CacheWait time.Duration
	// Clock replaces time.Now (nil): tests move it on to have deletion marks count as
	// orphaned (see OrphanedMarks) without waiting for it.
	Clock func() time.Time
}

// Provider implements the externalgrpc CloudProvider service for one tenant.
//
// Embedding UnimplementedCloudProviderServer keeps the server compiling against a newer proto
// with more RPCs; every RPC of this proto version is implemented explicitly.
type Provider struct {
	protos.UnimplementedCloudProviderServer

	scope infra.Scope
	view  *view
	// table answers the per-loop lookups (see table.go); nil in unit tests that build a
	// Provider over a plain reader and make only scaling calls.
	table *table
	// infra holds the scoped cache the view reads, writes (/scale, deletion marks, Events) and
	// reads past the cache for the scale-down decision (see NodeGroupDeleteNodes), all within
	// the tenant's scope.
	infra     *infra.Client
	nodesC    cache.Cache
	events    *eventReporter
	locks     groupLocks
	marks     recentMarks
	cacheWait time.Duration
	now       func() time.Time // Config.Clock
}

var _ protos.CloudProviderServer = (*Provider)(nil)

// InfraOptions are the infra cache adjustments a Provider needs: KubevirtMachineTemplates are
// cached by namespace only, because CAPK does not label them with the cluster name; the
// provider reads one only when a MachineDeployment of this cluster references it. Its scheme
// has only the types it reads and writes: Cluster API's, Events and /scale (templates are
// unstructured), not every infra type of the other programs.
func InfraOptions() infra.Options {
	return infra.Options{
		NamespaceOnly: []client.Object{newMachineTemplate()},
		Types:         []func(*runtime.Scheme) error{corev1.AddToScheme, autoscalingv1.AddToScheme, clusterv1.AddToScheme},
	}
}

// New registers the provider's indexes and event handlers on the (unstarted) caches.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Infra == nil {
		return nil, errors.New("autoscaler provider needs an infra client")
	}
	if cfg.CacheWait <= 0 {
		cfg.CacheWait = 10 * time.Second
	}
	if err := registerInfraIndexes(ctx, cfg.Infra); err != nil {
		return nil, err
	}
	// Create the template informer now so it syncs with the others instead of on the first
	// scale-from-zero request.
	if err := cfg.Infra.Watch(ctx, newMachineTemplate(), toolscache.ResourceEventHandlerFuncs{}); err != nil {
		return nil, fmt.Errorf("watching KubevirtMachineTemplates: %w", err)
	}
	var nodes client.Reader
	if cfg.Nodes != nil {
		if err := registerNodeIndexes(ctx, cfg.Nodes); err != nil {
			return nil, err
		}
		nodes = cfg.Nodes
	}
	scope := cfg.Infra.Scope()
	p := &Provider{
		scope:     scope,
		view:      newView(scope, cfg.NodeGroupSelector, cfg.Infra, nodes),
		infra:     cfg.Infra,
		nodesC:    cfg.Nodes,
		cacheWait: cfg.CacheWait,
		now:       cfg.Clock,
	}
	p.events = newEventReporter(p.view, p.infra)
	if err := p.events.register(ctx, p.infra); err != nil {
		return nil, err
	}
	p.table = newTable(p.view)
	if err := p.table.register(ctx, p.infra, cfg.Nodes); err != nil {
		return nil, err
	}
	return p, nil
}

// Start runs the caches until ctx ends and returns once they have synced.
func (p *Provider) Start(ctx context.Context) error {
	go func() {
		if err := p.infra.Start(ctx); err != nil {
			klog.ErrorS(err, "Cache stopped", "cache", "infra")
		}
	}()
	if p.nodesC != nil {
		go func() {
			if err := p.nodesC.Start(ctx); err != nil {
				klog.ErrorS(err, "Cache stopped", "cache", "tenant")
			}
		}()
	}
	start := time.Now()
	if !p.infra.WaitForCacheSync(ctx) || (p.nodesC != nil && !p.nodesC.WaitForCacheSync(ctx)) {
		return fmt.Errorf("caches did not sync: %w", context.Cause(ctx))
	}
	// The handlers get the first lists just after the caches hold them: a short poll, where
	// client-go's WaitForCacheSync would add its 100 ms period to every start.
	if err := wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(context.Context) (bool, error) {
		return p.table.hasSynced(), nil
	}); err != nil {
		return fmt.Errorf("node-group table did not sync: %w", err)
	}
	klog.InfoS("Autoscaler provider caches synced", "namespace", p.scope.Namespace,
		"cluster", p.scope.ClusterName, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func newMachineTemplate() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(machineTemplateGVK)
	return u
}

// groupLocks serialises the calls that change one group's size, so that the read of Machines,
// the marks and the /scale write of one call are never interleaved with another's.
type groupLocks struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// lock locks group id and returns the unlock function. Callers validate id first, so the map
// only ever holds real groups.
func (l *groupLocks) lock(id string) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*sync.Mutex{}
	}
	m, ok := l.locks[id]
	if !ok {
		m = &sync.Mutex{}
		l.locks[id] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}
