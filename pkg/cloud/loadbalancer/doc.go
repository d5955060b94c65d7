// Package loadbalancer serves tenant Services of type LoadBalancer with infra Services of type
// LoadBalancer in the tenant's management-cluster namespace, which MetalLB gives addresses.
//
// # Objects
//
// For each tenant Service the Balancer owns one infra Service named from the tenant Service UID
// (see InfraServiceName), labelled and annotated as created by tenantcloud for this tenant
// (infra.Scope.OwnedLabels/OwnedAnnotations) plus the tenant Service's namespace, name and UID.
// Its ports forward to the tenant NodePorts on this cluster's worker VMs: with
// externalTrafficPolicy Cluster through a selector on the worker virt-launcher pods, with Local
// through infra EndpointSlices mirrored from the tenant's own EndpointSlices (endpointsync.go),
// so traffic only reaches VMs that host ready endpoints. Everything the tenant can influence
// goes through an allow-list (DesiredService, Policy) and is re-applied on every sync.
//
// # Watch-driven status
//
// The upstream service controller calls EnsureLoadBalancer; it creates or updates the infra
// Service and returns at once with whatever ingress the infra Service has at that moment
// (usually none on creation): it never waits for MetalLB, so a worker is never held. The
// address reaches the tenant through statusSync (status.go): an event handler on the scoped
// infra Service informer enqueues the tenant Service named by the infra Service's labels the
// moment MetalLB writes status.loadBalancer, and a worker patches the tenant Service's status
// subresource from the informer caches — one PATCH, no polling interval, no LIST beyond the
// informers' initial one. The same worker also runs on tenant Service events, so a status that
// drifts (for instance overwritten by the upstream controller from an older read) is
// corrected from the infra Service, which is the source of truth.
//
// Two more event-driven loops keep the infra side right without polling: driftSync re-applies
// the desired infra Service when it is edited or deleted behind our back or when the tenant
// changes a field the upstream controller ignores (ipFamilyPolicy), and a quota refusal is
// retried the moment another infra Service goes away.
//
// # Refusals
//
// A request the tenant is not entitled to (a pool or address not granted, a conflicting or
// malformed request, the maxServices quota) is a *Refusal: the tenant Service gets a Warning
// Event naming the reason and no infra object is created, changed or deleted.
package loadbalancer
