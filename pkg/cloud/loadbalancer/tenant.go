package loadbalancer

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Tenant is what the Balancer needs of the tenant cluster.
type Tenant struct {
	Client   kubernetes.Interface
	Recorder record.EventRecorder
	// Informers must be started by the caller after Start returns (the cloud-controller-manager
	// framework starts the factory it hands to SetInformers once every controller is set up).
	Informers informers.SharedInformerFactory
}

// tenantView is the Balancer's read side of the tenant cluster.
type tenantView struct {
	client   kubernetes.Interface
	recorder record.EventRecorder
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	nodes    corelisters.NodeLister
	synced   []toolscache.InformerSynced
}

// Workers per queue. Status patches are independent single PATCHes whose latency is the tenant
// apiserver's, so several run in parallel to keep a burst of addresses from queueing; endpoint,
// class and drift syncs are rarer.
const (
	statusWorkers   = 8
	endpointWorkers = 1
	classWorkers    = 1
	driftWorkers    = 1
)

// Start registers the Balancer's handlers on the tenant informers of t and returns; in the
// background it then waits for the tenant informers and the infra cache (which the caller
// runs), hooks the infra informers, collects orphaned infra Services once, and runs the
// status, endpoint and class workers until ctx ends.
func (b *Balancer) Start(ctx context.Context, t Tenant) error {
	svcInf := t.Informers.Core().V1().Services()
	sliceInf := t.Informers.Discovery().V1().EndpointSlices()
	nodeInf := t.Informers.Core().V1().Nodes()
	view := &tenantView{
		client: t.Client, recorder: t.Recorder,
		services: svcInf.Lister(), slices: sliceInf.Lister(), nodes: nodeInf.Lister(),
		synced: []toolscache.InformerSynced{svcInf.Informer().HasSynced, sliceInf.Informer().HasSynced, nodeInf.Informer().HasSynced},
	}
	handlers := []struct {
		inf toolscache.SharedIndexInformer
		h   toolscache.ResourceEventHandler
	}{
		{svcInf.Informer(), b.status.tenantServiceHandler()},
		{svcInf.Informer(), b.endpoints.tenantServiceHandler()},
		{svcInf.Informer(), b.drift.tenantServiceHandler()},
		{sliceInf.Informer(), b.endpoints.tenantSliceHandler()},
		{nodeInf.Informer(), b.endpoints.tenantNodeHandler()},
	}
	if b.class != "" {
		handlers = append(handlers, struct {
			inf toolscache.SharedIndexInformer
			h   toolscache.ResourceEventHandler
		}{svcInf.Informer(), b.classes.handler()})
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return fmt.Errorf("registering tenant event handler: %w", err)
		}
	}
	b.tenantMu.Lock()
	b.tenant = view
	b.tenantMu.Unlock()

	go b.run(ctx, view)
	return nil
}

func (b *Balancer) run(ctx context.Context, view *tenantView) {
	logger := klog.FromContext(ctx).WithName("loadbalancer")
	ctx = klog.NewContext(ctx, logger)
	if !toolscache.WaitForNamedCacheSyncWithContext(ctx, view.synced...) {
		return
	}
	if err := b.watchInfra(ctx); err != nil {
		logger.Error(err, "Cannot watch infra objects; load balancer status and endpoints will not follow the infra cluster")
		return
	}
	if err := b.collectOrphans(ctx); err != nil {
		// Not fatal: the next start tries again, and nothing is deleted on doubt.
		logger.Error(err, "Collecting orphaned infra Services")
	}
	go b.status.run(ctx, statusWorkers)
	go b.endpoints.run(ctx, endpointWorkers)
	go b.drift.run(ctx, driftWorkers)
	if b.class != "" {
		go b.classes.run(ctx, classWorkers)
	}
	<-ctx.Done()
}

// watchInfra adds event handlers to the scoped infra informers (starting them if needed; it
// blocks until they have synced).
func (b *Balancer) watchInfra(ctx context.Context) error {
	hooks := []struct {
		obj client.Object
		h   toolscache.ResourceEventHandler
	}{
		{&corev1.Service{}, b.status.infraServiceHandler()},
		{&corev1.Service{}, b.endpoints.infraServiceHandler()},
		{&corev1.Service{}, b.drift.infraServiceHandler()},
		{&kubevirtv1.VirtualMachineInstance{}, b.endpoints.infraChangeHandler()},
		{&corev1.Pod{}, b.endpoints.infraChangeHandler()},
		{&discoveryv1.EndpointSlice{}, toolscache.ResourceEventHandlerFuncs{}}, // warm the cache used by deletes
	}
	for _, h := range hooks {
		if err := b.infra.Watch(ctx, h.obj, h.h); err != nil {
			return err
		}
	}
	return nil
}

// keyOf is the tenant Service's queue key.
func keyOf(svc *corev1.Service) types.NamespacedName {
	return types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
}

// tenantKey is the tenant Service an owned infra object stands for.
func (b *Balancer) tenantKey(obj client.Object) (types.NamespacedName, bool) {
	if !b.infra.Scope().Owns(obj) {
		return types.NamespacedName{}, false
	}
	l := obj.GetLabels()
	if l[LabelServiceNamespace] == "" || l[LabelServiceName] == "" {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: l[LabelServiceNamespace], Name: l[LabelServiceName]}, true
}

// objectOf unwraps informer delete tombstones.
func objectOf(obj any) client.Object {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, _ := obj.(client.Object)
	return o
}
