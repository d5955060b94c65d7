package loadbalancer

import (
	"maps"
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kubevirtv1 "kubevirt.io/api/core/v1"

	servicehelper "k8s.io/cloud-provider/service/helpers"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// WorkerSelector selects this cluster's worker virt-launcher pods: CAPK labels the VMI template
// with cluster name and role and KubeVirt copies those labels onto the pod. Control-plane VMs
// are never selected.
func WorkerSelector(scope infra.Scope) map[string]string {
	return map[string]string{
		infra.LabelClusterName: scope.ClusterName,
		infra.LabelRole:        infra.RoleWorker,
		kubevirtv1.AppLabel:    "virt-launcher",
	}
}

// LocalTraffic reports whether svc has externalTrafficPolicy Local, for which the infra
// Service is selectorless and its endpoints are mirrored from the tenant's EndpointSlices.
func LocalTraffic(svc *corev1.Service) bool {
	return svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
}

// DesiredService builds the infra Service for tenant Service svc: everything the tenant may
// influence is derived here, from an allow-list, on every sync (not only at creation), so an
// update of ports, traffic policy, IP families, session affinity, source ranges or allowed
// annotations reaches the infra Service. externalIPs, health-check node ports, appProtocol,
// loadBalancerClass and every other annotation are never copied.
func DesiredService(svc *corev1.Service, p Policy) (*corev1.Service, error) {
	name, err := InfraServiceName(svc.UID)
	if err != nil {
		return nil, refuse(ReasonInvalidRequest, "%v", err)
	}
	ports, err := InfraPorts(svc)
	if err != nil {
		return nil, err
	}
	metallb, err := p.Annotations(svc)
	if err != nil {
		return nil, err
	}
	ranges, err := sourceRanges(svc)
	if err != nil {
		return nil, err
	}
	labels := p.Scope.OwnedLabels(Component)
	maps.Copy(labels, tenantLabels(svc))
	annotations := p.Scope.OwnedAnnotations()
	maps.Copy(annotations, metallb)

	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Scope.Namespace, Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			Ports:                         ports,
			ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyCluster,
			SessionAffinity:               svc.Spec.SessionAffinity,
			SessionAffinityConfig:         svc.Spec.SessionAffinityConfig.DeepCopy(),
			LoadBalancerSourceRanges:      ranges,
			AllocateLoadBalancerNodePorts: ptr.To(false),
		},
	}
	if out.Spec.SessionAffinity == "" {
		out.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	if LocalTraffic(svc) {
		// Selectorless: the endpoints are the VMs that host ready tenant endpoints, so traffic
		// only reaches nodes that can serve it locally, as the tenant's health-check node port
		// would ensure on a cloud LB. The infra apiserver allocates its own health-check port.
		out.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	} else {
		out.Spec.Selector = WorkerSelector(p.Scope)
	}
	if out.Spec.IPFamilyPolicy, out.Spec.IPFamilies, err = ipFamilies(svc); err != nil {
		return nil, err
	}
	return out, nil
}

// sourceRanges validates the tenant's loadBalancerSourceRanges (spec field, else the legacy
// annotation) and returns them normalised and sorted, or nil for "allow all".
func sourceRanges(svc *corev1.Service) ([]string, error) {
	set, err := servicehelper.GetLoadBalancerSourceRanges(svc)
	if err != nil {
		return nil, refuse(ReasonInvalidRequest, "loadBalancerSourceRanges: %v", err)
	}
	if servicehelper.IsAllowAll(set) {
		return nil, nil
	}
	out := set.StringSlice()
	sort.Strings(out)
	return out, nil
}

// Merge applies desired onto a copy of existing and reports whether anything changed. Fields
// the infra apiserver or MetalLB own (cluster IPs, allocated ports, status, foreign labels and
// annotations such as metallb.io/ip-allocated-from-pool) are kept.
func Merge(existing, desired *corev1.Service) (*corev1.Service, bool) {
	out := existing.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	maps.Copy(out.Labels, desired.Labels)
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	for _, k := range managedAnnotations {
		delete(out.Annotations, k)
	}
	maps.Copy(out.Annotations, desired.Annotations)

	d := desired.Spec
	s := &out.Spec
	s.Type = d.Type
	s.Ports = mergePorts(s.Ports, d.Ports)
	s.Selector = d.Selector
	s.ExternalTrafficPolicy = d.ExternalTrafficPolicy
	if d.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		s.HealthCheckNodePort = 0
	}
	s.SessionAffinity = d.SessionAffinity
	s.SessionAffinityConfig = d.SessionAffinityConfig
	s.LoadBalancerSourceRanges = d.LoadBalancerSourceRanges
	s.AllocateLoadBalancerNodePorts = d.AllocateLoadBalancerNodePorts
	s.ExternalIPs = nil
	s.LoadBalancerIP = ""
	if d.IPFamilyPolicy != nil {
		s.IPFamilyPolicy = d.IPFamilyPolicy
		s.IPFamilies = mergeFamilies(s.IPFamilies, d.IPFamilies, *d.IPFamilyPolicy)
	}
	return out, !equality.Semantic.DeepEqual(existing, out)
}

// mergePorts takes the desired ports but keeps node ports the infra apiserver allocated for a
// port that is still there, so an update does not churn them.
func mergePorts(existing, desired []corev1.ServicePort) []corev1.ServicePort {
	out := make([]corev1.ServicePort, len(desired))
	for i, p := range desired {
		for _, e := range existing {
			if e.Port == p.Port && e.Protocol == p.Protocol && e.NodePort != 0 {
				p.NodePort = e.NodePort
			}
		}
		out[i] = p
	}
	return out
}

// Ingress maps the infra Service's MetalLB-written status to tenant Service svc's: addresses
// only (and their ipMode), in the order of svc's spec.ipFamilies, and only of those families
// (kube-proxy serves a Service's load-balancer addresses of its own families only; a dual-stack
// infra cluster gives a PreferDualStack Service of a single-stack tenant a second address the
// tenant cannot serve). Anything that does not parse as an IP is dropped. A Service without
// families (never from an apiserver) keeps every address in MetalLB's order.
func Ingress(infraStatus corev1.LoadBalancerStatus, svc *corev1.Service) corev1.LoadBalancerStatus {
	var out corev1.LoadBalancerStatus
	rank := func(a netip.Addr) int {
		if len(svc.Spec.IPFamilies) == 0 {
			return 0
		}
		return slices.Index(svc.Spec.IPFamilies, familyOf(a))
	}
	for _, in := range infraStatus.Ingress {
		a, err := netip.ParseAddr(in.IP)
		if err != nil || rank(a) < 0 {
			continue
		}
		out.Ingress = append(out.Ingress, corev1.LoadBalancerIngress{IP: in.IP, IPMode: in.IPMode})
	}
	slices.SortStableFunc(out.Ingress, func(x, y corev1.LoadBalancerIngress) int {
		return rank(netip.MustParseAddr(x.IP)) - rank(netip.MustParseAddr(y.IP))
	})
	return out
}
