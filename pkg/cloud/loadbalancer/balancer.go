package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/pkg/metrics"
)

// Options configure a Balancer beyond the tenant config.
type Options struct {
	// Class, when set, is a loadBalancerClass the Balancer serves itself (the upstream service
	// controller ignores every Service that has a class). Services of any other class are
	// always left alone.
	Class string
	// Metrics records ensure and delete operations by outcome; may be nil.
	Metrics *metrics.Metrics
}

// Balancer implements cloudprovider.LoadBalancer on MetalLB in the infra cluster.
type Balancer struct {
	infra       *infra.Client
	policy      Policy
	maxServices int
	class       string
	metrics     *metrics.Metrics

	// quotaMu serialises the quota check with the create it guards; pending holds infra
	// Services created by this process that the informer has not delivered yet, so a burst of
	// creations cannot overshoot maxServices through cache lag.
	quotaMu sync.Mutex
	pending map[string]bool
	// waiting are tenant Services refused for quota; when an infra Service goes away they are
	// re-synced at once (driftSync) instead of at the upstream controller's next backoff.
	waiting map[types.NamespacedName]bool

	tenantMu sync.RWMutex
	tenant   *tenantView // nil until Start

	endpoints *endpointSync
	status    *statusSync
	classes   *classSync // nil without Options.Class
	drift     *driftSync
}

var _ cloudprovider.LoadBalancer = (*Balancer)(nil)

// New returns a Balancer for the tenant of ic with the operator's limits lb.
func New(ic *infra.Client, lb config.LoadBalancer, opts Options) *Balancer {
	b := &Balancer{
		infra:       ic,
		policy:      Policy{LB: lb, Scope: ic.Scope()},
		maxServices: lb.MaxServices,
		class:       opts.Class,
		metrics:     opts.Metrics,
		pending:     map[string]bool{},
		waiting:     map[types.NamespacedName]bool{},
	}
	b.endpoints = newEndpointSync(b)
	b.status = newStatusSync(b)
	b.drift = newDriftSync(b)
	if b.class != "" {
		b.classes = newClassSync(b)
	}
	return b
}

// Wants reports whether svc is a LoadBalancer this Balancer serves: type LoadBalancer with no
// class (the upstream controller's share) or with the Balancer's own class.
func (b *Balancer) Wants(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	return svc.Spec.LoadBalancerClass == nil || (b.class != "" && *svc.Spec.LoadBalancerClass == b.class)
}

// ownClass reports whether svc carries the Balancer's own class (served by classSync).
func (b *Balancer) ownClass(svc *corev1.Service) bool {
	return b.class != "" && svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == b.class
}

// GetLoadBalancerName is the infra Service name.
func (b *Balancer) GetLoadBalancerName(_ context.Context, _ string, svc *corev1.Service) string {
	name, err := InfraServiceName(svc.UID)
	if err != nil {
		return ""
	}
	return name
}

// GetLoadBalancer reports the infra Service of svc, if this tenant owns one.
func (b *Balancer) GetLoadBalancer(ctx context.Context, _ string, svc *corev1.Service) (*corev1.LoadBalancerStatus, bool, error) {
	infraSvc, err := b.infraService(ctx, svc)
	if apierrors.IsNotFound(err) {
		if b.isPending(svc) {
			// Created by us a moment ago and not in the cache yet: it does exist.
			return &corev1.LoadBalancerStatus{}, true, nil
		}
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	st := Ingress(infraSvc.Status.LoadBalancer, svc)
	return &st, true, nil
}

// EnsureLoadBalancer creates or updates the infra Service of svc and returns its current
// status without waiting for MetalLB; statusSync carries the address to the tenant when it
// comes. The node list is not used: workers are selected by label, and ETP=Local endpoints
// come from the tenant's EndpointSlices.
func (b *Balancer) EnsureLoadBalancer(ctx context.Context, _ string, svc *corev1.Service, _ []*corev1.Node) (*corev1.LoadBalancerStatus, error) {
	if !b.Wants(svc) {
		return nil, cloudprovider.ImplementedElsewhere
	}
	st, err := b.ensure(ctx, svc)
	b.report(svc, err)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// report tells the tenant what a sync initiated for svc refused or ignored. Only the owners of
// a Service's sync (the upstream controller through EnsureLoadBalancer, classSync) report, so
// internal re-syncs do not repeat the Events.
func (b *Balancer) report(svc *corev1.Service, err error) {
	if r, ok := AsRefusal(err); ok {
		b.warn(svc, r.Reason, r.Message)
		return
	}
	if err == nil && len(svc.Spec.ExternalIPs) > 0 {
		b.warn(svc, ReasonExternalIPsIgnored, "spec.externalIPs are a tenant-cluster setting and are not given to the load balancer")
	}
}

// UpdateLoadBalancer is called when the set of tenant nodes changes. Worker VMs are selected by
// label in the infra cluster and ETP=Local endpoints follow Node and EndpointSlice events
// (endpointSync), so there is nothing to do beyond a re-sync of the endpoints.
func (b *Balancer) UpdateLoadBalancer(_ context.Context, _ string, svc *corev1.Service, _ []*corev1.Node) error {
	if b.Wants(svc) && LocalTraffic(svc) {
		b.endpoints.enqueue(keyOf(svc))
	}
	return nil
}

// EnsureLoadBalancerDeleted deletes the infra Service of svc and its EndpointSlices. Only
// objects this tenant owns and that stand for this incarnation (UID label) of svc are deleted.
func (b *Balancer) EnsureLoadBalancerDeleted(ctx context.Context, _ string, svc *corev1.Service) error {
	if b.ownClass(svc) && svc.DeletionTimestamp == nil {
		// Served by classSync, which deletes on its own terms (finalizer, type change); the
		// upstream controller only calls here because it does not know the class.
		return nil
	}
	return b.delete(ctx, svc)
}

// Operation names in the metrics.
const (
	opEnsure = "EnsureLoadBalancer"
	opDelete = "EnsureLoadBalancerDeleted"
)

// outcome classifies err for the metrics: a refusal is the tenant's request, not a failure.
func outcome(err error) string {
	if err == nil {
		return metrics.OutcomeOK
	}
	if _, ok := AsRefusal(err); ok {
		return metrics.OutcomeRefused
	}
	return metrics.OutcomeError
}

func (b *Balancer) ensure(ctx context.Context, svc *corev1.Service) (*corev1.LoadBalancerStatus, error) {
	end := b.metrics.Begin(opEnsure)
	st, err := b.ensureInfra(ctx, svc)
	end(outcome(err))
	return st, err
}

func (b *Balancer) ensureInfra(ctx context.Context, svc *corev1.Service) (*corev1.LoadBalancerStatus, error) {
	desired, err := DesiredService(svc, b.policy)
	if err != nil {
		return nil, err
	}
	existing := &corev1.Service{}
	err = b.infra.GetOwned(ctx, desired.Name, existing)
	if apierrors.IsNotFound(err) {
		// An adopted upstream load balancer is kept under its own name (and address).
		if adopted, aerr := b.adoptedService(ctx, svc); aerr == nil {
			existing, err, desired.Name = adopted, nil, adopted.Name
		} else if !apierrors.IsNotFound(aerr) {
			return nil, aerr
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		created, err := b.create(ctx, svc, desired)
		if err != nil {
			return nil, err
		}
		b.endpoints.enqueue(keyOf(svc))
		st := Ingress(created.Status.LoadBalancer, svc)
		return &st, nil
	case err != nil:
		return nil, err
	}
	if existing.Labels[LabelServiceUID] != string(svc.UID) {
		return nil, refuse(ReasonNameTaken, "infra Service %s stands for another Service", desired.Name)
	}
	merged, changed := Merge(existing, desired)
	// An infra Service created before they were owned by the tenant's Cluster (or adopted from
	// the upstream ccm) gets the owner reference now.
	owned, err := b.infra.AddClusterOwner(ctx, merged)
	if err != nil {
		return nil, fmt.Errorf("infra Service %s/%s: %w", merged.Namespace, merged.Name, err)
	}
	changed = changed || owned
	result := existing
	if changed {
		if err := b.infra.UpdateOwned(ctx, merged); err != nil {
			return nil, b.infraWriteError(svc, "updating", merged, err)
		}
		klog.FromContext(ctx).V(2).Info("Updated infra Service", "service", klog.KObj(svc), "infraService", klog.KObj(merged))
		result = merged
	}
	b.endpoints.enqueue(keyOf(svc))
	st := Ingress(result.Status.LoadBalancer, svc)
	return &st, nil
}

// create checks the quota and creates the infra Service. The quota lock is held only to
// count and to reserve the name (as pending, so concurrent creates count it), never across the
// Cluster read and the create: with it held, a burst of Services was created one infra round
// trip pair at a time whatever --concurrent-service-syncs said.
func (b *Balancer) create(ctx context.Context, svc, desired *corev1.Service) (*corev1.Service, error) {
	// Owned by the tenant's Cluster, so the management cluster's garbage collector removes
	// it (and, through their owner reference to it, its EndpointSlices) with the Cluster.
	if _, err := b.infra.AddClusterOwner(ctx, desired); err != nil {
		return nil, fmt.Errorf("infra Service %s/%s: %w", desired.Namespace, desired.Name, err)
	}
	wasPending, err := b.reserve(ctx, svc, desired.Name)
	if err != nil {
		return nil, err
	}
	err = b.infra.CreateOwned(ctx, desired)
	if fams, ok := createFamilies(svc, desired); ok && familyUnavailable(err) != "" {
		// PreferDualStack and the infra cluster lacks the tenant's primary family: it is
		// single-stack in the other one, which the tenant has too.
		klog.FromContext(ctx).V(2).Info("Infra cluster lacks the primary IP family; asking for the second", "service", klog.KObj(svc), "families", fams)
		desired.Spec.IPFamilies = fams
		err = b.infra.CreateOwned(ctx, desired)
	}
	if err != nil {
		if !wasPending {
			b.observed(desired.Name) // not created by this call: the reservation goes
		}
		if apierrors.IsAlreadyExists(err) {
			// The name is derived from the UID, so an object we cannot see through GetOwned is
			// not ours (or is ours and the cache lags: the next sync settles it).
			if wasPending {
				return nil, fmt.Errorf("infra Service %s/%s created but not yet observed", desired.Namespace, desired.Name)
			}
			return nil, refuse(ReasonNameTaken, "infra Service %s exists and was not created by tenantcloud for this cluster", desired.Name)
		}
		return nil, b.infraWriteError(svc, "creating", desired, err)
	}
	klog.FromContext(ctx).Info("Created infra Service", "service", klog.KObj(svc), "infraService", klog.KObj(desired))
	return desired, nil
}

// reserve checks the quota for one more infra Service named name and marks it pending, so
// creates running at the same time count it. It reports whether name was pending already (a
// create of ours not yet seen by the informer), which needs no new quota slot.
func (b *Balancer) reserve(ctx context.Context, svc *corev1.Service, name string) (wasPending bool, err error) {
	b.quotaMu.Lock()
	defer b.quotaMu.Unlock()
	if b.pending[name] {
		return true, nil
	}
	if b.maxServices > 0 {
		n, err := b.countLocked(ctx)
		if err != nil {
			return false, err
		}
		if n >= b.maxServices {
			b.waiting[keyOf(svc)] = true
			return false, refuse(ReasonQuotaExceeded, "this cluster may have at most %d load balancers (config loadBalancer.maxServices) and has %d", b.maxServices, n)
		}
	}
	b.pending[name] = true
	delete(b.waiting, keyOf(svc))
	return false, nil
}

// countLocked counts this tenant's infra LoadBalancer Services, including ones just created.
func (b *Balancer) countLocked(ctx context.Context) (int, error) {
	var list corev1.ServiceList
	if err := b.infra.ListOwned(ctx, &list, Component, nil); err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for i := range list.Items {
		seen[list.Items[i].Name] = true
	}
	n := len(seen)
	for name := range b.pending {
		if seen[name] {
			delete(b.pending, name)
		} else {
			n++
		}
	}
	return n, nil
}

// observed forgets a pending creation once the informer has delivered it (or its deletion).
func (b *Balancer) observed(name string) {
	b.quotaMu.Lock()
	delete(b.pending, name)
	b.quotaMu.Unlock()
}

// released is called when an infra Service is gone: a quota slot may be free, so the Services
// waiting for one are re-synced now.
func (b *Balancer) released() {
	b.quotaMu.Lock()
	keys := make([]types.NamespacedName, 0, len(b.waiting))
	for k := range b.waiting {
		keys = append(keys, k)
	}
	clear(b.waiting)
	b.quotaMu.Unlock()
	for _, k := range keys {
		b.drift.q.add(k)
	}
}

func (b *Balancer) isPending(svc *corev1.Service) bool {
	name, err := InfraServiceName(svc.UID)
	if err != nil {
		return false
	}
	b.quotaMu.Lock()
	defer b.quotaMu.Unlock()
	return b.pending[name]
}

// infraWriteError reports an infra apiserver refusal (Invalid, Forbidden: a request the infra
// cluster cannot satisfy, e.g. RequireDualStack on a single-stack cluster) to the tenant.
func (b *Balancer) infraWriteError(svc *corev1.Service, verb string, obj *corev1.Service, err error) error {
	if why := familyUnavailable(err); why != "" {
		return refuse(ReasonIPFamilyUnavailable, "%s; the load balancer was not %s (%s)", familyRefusal(svc), map[string]string{"creating": "created", "updating": "changed"}[verb], why)
	}
	var st apierrors.APIStatus
	if (apierrors.IsInvalid(err) || apierrors.IsForbidden(err)) && errors.As(err, &st) {
		b.warn(svc, ReasonInfraServiceRefused, "the infra cluster refused the load balancer: "+st.Status().Message)
	}
	return fmt.Errorf("%s infra Service %s/%s: %w", verb, obj.Namespace, obj.Name, err)
}

func (b *Balancer) delete(ctx context.Context, svc *corev1.Service) error {
	end := b.metrics.Begin(opDelete)
	err := b.deleteInfra(ctx, svc)
	end(outcome(err))
	return err
}

func (b *Balancer) deleteInfra(ctx context.Context, svc *corev1.Service) error {
	if err := b.deleteSlices(ctx, map[string]string{LabelServiceUID: string(svc.UID)}); err != nil {
		return err
	}
	infraSvc, err := b.infraService(ctx, svc)
	if apierrors.IsNotFound(err) {
		if b.isPending(svc) {
			return fmt.Errorf("infra Service of %s/%s created but not yet observed; retrying", svc.Namespace, svc.Name)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if err := b.infra.DeleteOwned(ctx, infraSvc); err != nil {
		return err
	}
	b.observed(infraSvc.Name)
	klog.FromContext(ctx).Info("Deleted infra Service", "service", klog.KObj(svc), "infraService", klog.KObj(infraSvc))
	return nil
}

// deleteSlices deletes this tenant's infra EndpointSlices matching sel.
func (b *Balancer) deleteSlices(ctx context.Context, sel map[string]string) error {
	var slices discoveryv1.EndpointSliceList
	if err := b.infra.ListOwned(ctx, &slices, Component, sel); err != nil {
		return err
	}
	for i := range slices.Items {
		if err := b.infra.DeleteOwned(ctx, &slices.Items[i]); err != nil {
			return err
		}
	}
	return nil
}

// infraService returns the owned infra Service standing for this incarnation of svc: the
// native one, or else an adopted upstream one.
func (b *Balancer) infraService(ctx context.Context, svc *corev1.Service) (*corev1.Service, error) {
	name, err := InfraServiceName(svc.UID)
	if err != nil {
		return nil, apierrors.NewNotFound(corev1.Resource("services"), svc.Name)
	}
	infraSvc := &corev1.Service{}
	if err := b.infra.GetOwned(ctx, name, infraSvc); apierrors.IsNotFound(err) {
		return b.adoptedService(ctx, svc)
	} else if err != nil {
		return nil, err
	}
	if infraSvc.Labels[LabelServiceUID] != string(svc.UID) {
		return nil, apierrors.NewNotFound(corev1.Resource("services"), name)
	}
	return infraSvc, nil
}

// warn records a Warning Event on the tenant Service.
func (b *Balancer) warn(svc *corev1.Service, reason, msg string) {
	if t := b.tenantView(); t != nil {
		t.recorder.Event(svc, corev1.EventTypeWarning, reason, msg)
	}
	klog.InfoS("Load balancer request not carried out", "service", klog.KObj(svc), "reason", reason, "message", msg)
}

func (b *Balancer) tenantView() *tenantView {
	b.tenantMu.RLock()
	defer b.tenantMu.RUnlock()
	return b.tenant
}
