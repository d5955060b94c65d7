package loadbalancer

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// endpointSync mirrors the tenant's EndpointSlices of ETP=Local Services into the infra
// EndpointSlices of their selectorless infra Services (see MapEndpoints). It is driven by
// events only: tenant EndpointSlices, Services and Nodes; infra VMIs, launcher pods and our
// infra Services.
type endpointSync struct {
	b *Balancer
	q *queue

	mu sync.Mutex
	// reported is, per tenant Service, the skip list last reported as an Event, so an
	// unchanged problem is not re-reported on every sync.
	reported map[types.NamespacedName]string
}

// maxSkipsInEvent bounds the Event message; the count says how many more there were.
const maxSkipsInEvent = 5

func newEndpointSync(b *Balancer) *endpointSync {
	e := &endpointSync{b: b, reported: map[types.NamespacedName]string{}}
	e.q = newQueue("lb-endpoints", e.sync)
	return e
}

func (e *endpointSync) run(ctx context.Context, workers int) { e.q.run(ctx, workers) }

func (e *endpointSync) enqueue(key types.NamespacedName) { e.q.add(key) }

// enqueueLocal enqueues every ETP=Local LoadBalancer Service: a node, VMI or pod change can
// move any of them. The fan-out reads the informer cache only.
func (e *endpointSync) enqueueLocal() {
	t := e.b.tenantView()
	if t == nil {
		return
	}
	svcs, err := t.services.List(labels.Everything())
	if err != nil {
		return
	}
	for _, svc := range svcs {
		if e.b.Wants(svc) && LocalTraffic(svc) {
			e.q.add(keyOf(svc))
		}
	}
}

func (e *endpointSync) tenantSliceHandler() toolscache.ResourceEventHandler {
	enqueue := func(obj any) {
		if o := objectOf(obj); o != nil {
			if name := o.GetLabels()[discoveryv1.LabelServiceName]; name != "" {
				e.q.add(types.NamespacedName{Namespace: o.GetNamespace(), Name: name})
			}
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
		DeleteFunc: enqueue,
	}
}

func (e *endpointSync) tenantServiceHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if svc, ok := obj.(*corev1.Service); ok && e.b.Wants(svc) && LocalTraffic(svc) {
				e.q.add(keyOf(svc))
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Service)
			n, ok2 := newObj.(*corev1.Service)
			if !ok1 || !ok2 {
				return
			}
			if LocalTraffic(o) != LocalTraffic(n) || e.b.Wants(o) != e.b.Wants(n) || o.UID != n.UID ||
				!reflect.DeepEqual(o.Spec.Ports, n.Spec.Ports) || (n.DeletionTimestamp != nil) != (o.DeletionTimestamp != nil) {
				e.q.add(keyOf(n))
			}
		},
		DeleteFunc: func(obj any) {
			if o := objectOf(obj); o != nil {
				e.q.add(types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()})
			}
		},
	}
}

func (e *endpointSync) tenantNodeHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { e.enqueueLocal() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if ok1 && ok2 && o.Spec.ProviderID != n.Spec.ProviderID {
				e.enqueueLocal()
			}
		},
		DeleteFunc: func(any) { e.enqueueLocal() },
	}
}

// infraChangeHandler follows VMIs and launcher pods: their phase, node and addresses decide
// where ETP=Local traffic may go.
func (e *endpointSync) infraChangeHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { e.enqueueLocal() },
		UpdateFunc: func(oldObj, newObj any) {
			if infraTargetChanged(oldObj, newObj) {
				e.enqueueLocal()
			}
		},
		DeleteFunc: func(any) { e.enqueueLocal() },
	}
}

func infraTargetChanged(oldObj, newObj any) bool {
	switch o := oldObj.(type) {
	case *kubevirtv1.VirtualMachineInstance:
		n, ok := newObj.(*kubevirtv1.VirtualMachineInstance)
		return !ok || o.Status.Phase != n.Status.Phase || o.Status.NodeName != n.Status.NodeName ||
			!equality.Semantic.DeepEqual(o.Status.Interfaces, n.Status.Interfaces) || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil)
	case *corev1.Pod:
		n, ok := newObj.(*corev1.Pod)
		return !ok || o.Status.Phase != n.Status.Phase || !equality.Semantic.DeepEqual(o.Status.PodIPs, n.Status.PodIPs) ||
			(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil)
	}
	return true
}

// infraServiceHandler syncs endpoints once our infra Service is in the cache (EnsureLoadBalancer
// enqueues right after creating it, possibly before the informer has it) and when its traffic
// policy or IP families change (the families decide which slices it gets).
func (e *endpointSync) infraServiceHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o := objectOf(obj); o != nil {
				if key, ok := e.b.tenantKey(o); ok {
					e.q.add(key)
				}
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Service)
			n, ok2 := newObj.(*corev1.Service)
			if ok1 && ok2 && (o.Spec.ExternalTrafficPolicy != n.Spec.ExternalTrafficPolicy || o.UID != n.UID ||
				!slices.Equal(o.Spec.IPFamilies, n.Spec.IPFamilies)) {
				if key, ok := e.b.tenantKey(n); ok {
					e.q.add(key)
				}
			}
		},
	}
}

func (e *endpointSync) sync(ctx context.Context, key types.NamespacedName) error {
	t := e.b.tenantView()
	byName := map[string]string{LabelServiceNamespace: key.Namespace, LabelServiceName: key.Name}
	svc, err := t.services.Services(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		e.forget(key)
		return e.b.deleteSlices(ctx, byName)
	}
	if err != nil {
		return err
	}
	if !e.b.Wants(svc) || !LocalTraffic(svc) || svc.DeletionTimestamp != nil {
		e.forget(key)
		return e.b.deleteSlices(ctx, byName)
	}
	infraSvc, err := e.b.infraService(ctx, svc)
	if apierrors.IsNotFound(err) {
		return nil // EnsureLoadBalancer creates it and enqueues again
	}
	if err != nil {
		return err
	}
	if infraSvc.Spec.Selector != nil || infraSvc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		return nil // the switch to Local has not reached the infra Service yet
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	tenantSlices, err := t.slices.EndpointSlices(svc.Namespace).List(sel)
	if err != nil {
		return err
	}
	eps, skipped := MapEndpoints(tenantSlices, e.b.resolver(ctx, t))
	e.report(svc, skipped)
	for _, fam := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		if !ServesFamily(infraSvc, fam) {
			// As the EndpointSlice controller does: slices only of the Service's families
			// (one left from before a family change is deleted).
			eps[fam] = nil
		}
		if err := e.apply(ctx, svc, infraSvc, fam, eps[fam]); err != nil {
			return err
		}
	}
	return nil
}

// apply makes the infra slice of family match eps: created, updated, or deleted when empty.
func (e *endpointSync) apply(ctx context.Context, svc, infraSvc *corev1.Service, fam corev1.IPFamily, eps []discoveryv1.Endpoint) error {
	desired := DesiredSlice(e.b.policy, svc, infraSvc, fam, eps)
	existing := &discoveryv1.EndpointSlice{}
	err := e.b.infra.GetOwned(ctx, desired.Name, existing)
	switch {
	case apierrors.IsNotFound(err):
		if len(eps) == 0 {
			return nil
		}
		if err := e.b.infra.CreateOwned(ctx, desired); err != nil {
			return fmt.Errorf("creating infra EndpointSlice %s/%s: %w", desired.Namespace, desired.Name, err)
		}
		klog.FromContext(ctx).V(2).Info("Created infra EndpointSlice", "service", klog.KObj(svc), "slice", klog.KObj(desired), "endpoints", len(eps))
		return nil
	case err != nil:
		return err
	}
	if len(eps) == 0 {
		return e.b.infra.DeleteOwned(ctx, existing)
	}
	upd := existing.DeepCopy()
	upd.Labels, upd.Annotations, upd.OwnerReferences = desired.Labels, desired.Annotations, desired.OwnerReferences
	upd.Endpoints, upd.Ports = desired.Endpoints, desired.Ports
	if equality.Semantic.DeepEqual(existing, upd) {
		return nil
	}
	if err := e.b.infra.UpdateOwned(ctx, upd); err != nil {
		return fmt.Errorf("updating infra EndpointSlice %s/%s: %w", upd.Namespace, upd.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("Updated infra EndpointSlice", "service", klog.KObj(svc), "slice", klog.KObj(upd), "endpoints", len(eps))
	return nil
}

// report emits one Warning Event listing the skipped endpoints when the list changes.
func (e *endpointSync) report(svc *corev1.Service, skipped []Skipped) {
	key := keyOf(svc)
	lines := make([]string, 0, len(skipped))
	for _, s := range skipped {
		lines = append(lines, s.String())
	}
	sig := strings.Join(lines, "\n")
	e.mu.Lock()
	same := e.reported[key] == sig
	e.reported[key] = sig
	e.mu.Unlock()
	if same || len(skipped) == 0 {
		return
	}
	shown := lines
	if len(shown) > maxSkipsInEvent {
		shown = shown[:maxSkipsInEvent]
	}
	msg := fmt.Sprintf("%d endpoint(s) not routed by the load balancer (externalTrafficPolicy Local only sends traffic to this cluster's worker VMs): %s",
		len(skipped), strings.Join(shown, "; "))
	if len(lines) > len(shown) {
		msg += fmt.Sprintf("; and %d more", len(lines)-len(shown))
	}
	e.b.warn(svc, ReasonEndpointSkipped, msg)
}

func (e *endpointSync) forget(key types.NamespacedName) {
	e.mu.Lock()
	delete(e.reported, key)
	e.mu.Unlock()
}
