package loadbalancer

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Target is where a tenant node's traffic goes in the infra cluster: the VM behind the node,
// the infra node running it, and the addresses of its virt-launcher pod.
type Target struct {
	VM        string
	InfraNode string
	Addrs     []netip.Addr
}

// Resolver maps a tenant node name to its Target; an error is the reason the node's endpoints
// are skipped (unknown node, no providerID, a VM of another cluster, VM not running, ...).
type Resolver func(nodeName string) (Target, error)

// Skipped is a tenant endpoint that was not mirrored, with why.
type Skipped struct {
	Endpoint string // first address of the tenant endpoint
	Node     string // its nodeName, empty if it had none
	Reason   string
}

func (s Skipped) String() string {
	if s.Node == "" {
		return fmt.Sprintf("%s: %s", s.Endpoint, s.Reason)
	}
	return fmt.Sprintf("%s on node %s: %s", s.Endpoint, s.Node, s.Reason)
}

// MapEndpoints turns the tenant's EndpointSlices of an ETP=Local Service into infra endpoints,
// one per VM that hosts at least one serving tenant endpoint, per address family. Endpoints
// with no nodeName or on a node that does not resolve to a VM of this cluster are skipped and
// reported — there is never a fallback to other VMs, which would defeat ETP=Local and let a
// crafted EndpointSlice steer traffic.
//
// Conditions are aggregated per VM: ready if any tenant endpoint there is ready, serving if
// any is serving, terminating only if all are.
func MapEndpoints(slices []*discoveryv1.EndpointSlice, resolve Resolver) (map[corev1.IPFamily][]discoveryv1.Endpoint, []Skipped) {
	type agg struct {
		target                       Target
		ready, serving, allTerminate bool
	}
	byVM := map[string]*agg{}
	resolved := map[string]Target{}
	failed := map[string]string{}
	var skipped []Skipped

	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range sl.Endpoints {
			first := ""
			if len(ep.Addresses) > 0 {
				first = ep.Addresses[0]
			}
			if !serving(ep) {
				continue // not a candidate for traffic in the tenant either
			}
			if ep.NodeName == nil || *ep.NodeName == "" {
				skipped = append(skipped, Skipped{Endpoint: first, Reason: "endpoint has no nodeName"})
				continue
			}
			node := *ep.NodeName
			t, ok := resolved[node]
			if !ok {
				if reason, bad := failed[node]; bad {
					skipped = append(skipped, Skipped{Endpoint: first, Node: node, Reason: reason})
					continue
				}
				var err error
				if t, err = resolve(node); err != nil {
					failed[node] = err.Error()
					skipped = append(skipped, Skipped{Endpoint: first, Node: node, Reason: err.Error()})
					continue
				}
				resolved[node] = t
			}
			a := byVM[t.VM]
			if a == nil {
				a = &agg{target: t, allTerminate: true}
				byVM[t.VM] = a
			}
			a.ready = a.ready || ready(ep)
			a.serving = true
			a.allTerminate = a.allTerminate && ptr.Deref(ep.Conditions.Terminating, false)
		}
	}

	vms := make([]string, 0, len(byVM))
	for vm := range byVM {
		vms = append(vms, vm)
	}
	sort.Strings(vms)
	out := map[corev1.IPFamily][]discoveryv1.Endpoint{}
	for _, vm := range vms {
		a := byVM[vm]
		for _, addr := range a.target.Addrs {
			fam := corev1.IPv4Protocol
			if addr.Is6() {
				fam = corev1.IPv6Protocol
			}
			ep := discoveryv1.Endpoint{
				Addresses: []string{addr.String()},
				Conditions: discoveryv1.EndpointConditions{
					Ready:       ptr.To(a.ready && !a.allTerminate),
					Serving:     ptr.To(a.serving),
					Terminating: ptr.To(a.allTerminate),
				},
			}
			if a.target.InfraNode != "" {
				ep.NodeName = ptr.To(a.target.InfraNode)
			}
			out[fam] = append(out[fam], ep)
		}
	}
	return out, skipped
}

// ready follows the EndpointSlice API: a nil ready condition means ready.
func ready(ep discoveryv1.Endpoint) bool { return ptr.Deref(ep.Conditions.Ready, true) }

// serving: nil falls back to ready, as the API documents.
func serving(ep discoveryv1.Endpoint) bool {
	if ep.Conditions.Serving != nil {
		return *ep.Conditions.Serving
	}
	return ready(ep)
}

// ManagedByValue is the endpointslice.kubernetes.io/managed-by value of our infra slices; the
// infra EndpointSlice controller leaves slices managed by someone else alone.
const ManagedByValue = "ccm.tenantcloud.io"

// DesiredSlice is the infra EndpointSlice of family for infra Service infraSvc, which stands
// for tenant Service svc. The slice is owned by the infra Service (non-controller reference)
// so the infra garbage collector removes it with the Service.
func DesiredSlice(p Policy, svc, infraSvc *corev1.Service, family corev1.IPFamily, eps []discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	labels := p.Scope.OwnedLabels(Component)
	for k, v := range tenantLabels(svc) {
		labels[k] = v
	}
	labels[discoveryv1.LabelServiceName] = infraSvc.Name
	labels[discoveryv1.LabelManagedBy] = ManagedByValue
	addrType := discoveryv1.AddressTypeIPv4
	if family == corev1.IPv6Protocol {
		addrType = discoveryv1.AddressTypeIPv6
	}
	sl := &discoveryv1.EndpointSlice{
		AddressType: addrType,
		Endpoints:   eps,
		Ports:       EndpointPorts(svc),
	}
	sl.Namespace = p.Scope.Namespace
	sl.Name = EndpointSliceName(infraSvc.Name, family)
	sl.Labels = labels
	sl.Annotations = p.Scope.OwnedAnnotations()
	if infraSvc.UID != "" {
		sl.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Service", Name: infraSvc.Name, UID: infraSvc.UID,
		}}
	}
	if sl.Endpoints == nil {
		sl.Endpoints = []discoveryv1.Endpoint{}
	}
	return sl
}
