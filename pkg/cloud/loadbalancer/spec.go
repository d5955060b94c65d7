package loadbalancer

import (
	"maps"
	"net/netip"
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
	out.Spec.IPFamilyPolicy, out.Spec.IPFamilies = ipFamilies(svc)
	return out, nil
}

// ipFamilies mirrors the tenant's IP family request. PreferDualStack keeps only the primary
// family so a single-stack infra cluster degrades gracefully (it would reject an explicit
// second family); RequireDualStack is passed on as it is and fails loudly on such a cluster.
func ipFamilies(svc *corev1.Service) (*corev1.IPFamilyPolicy, []corev1.IPFamily) {
	policy := svc.Spec.IPFamilyPolicy
	fams := svc.Spec.IPFamilies
	if policy == nil {
		if len(fams) == 0 {
			return nil, nil
		}
		return nil, fams[:1:1]
	}
	switch *policy {
	case corev1.IPFamilyPolicyPreferDualStack:
		if len(fams) > 0 {
			fams = fams[:1:1]
		}
	case corev1.IPFamilyPolicySingleStack:
		if len(fams) > 1 {
			fams = fams[:1:1]
		}
	}
	return ptr.To(*policy), append([]corev1.IPFamily(nil), fams...)
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

// mergeFamilies keeps the infra Service's primary family (immutable once set) and follows the
// desired policy for the secondary: dropped for SingleStack, kept if the infra apiserver added
// one for PreferDualStack, requested for RequireDualStack.
func mergeFamilies(existing, desired []corev1.IPFamily, policy corev1.IPFamilyPolicy) []corev1.IPFamily {
	if len(existing) == 0 {
		return desired
	}
	switch policy {
	case corev1.IPFamilyPolicySingleStack:
		return existing[:1:1]
	case corev1.IPFamilyPolicyPreferDualStack:
		return existing
	default:
		if len(existing) == 1 && len(desired) == 2 {
			return []corev1.IPFamily{existing[0], otherFamily(existing[0])}
		}
		return existing
	}
}

func otherFamily(f corev1.IPFamily) corev1.IPFamily {
	if f == corev1.IPv4Protocol {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

// Ingress maps the infra Service's MetalLB-written status to the tenant Service's: addresses
// only (and their ipMode); anything that does not parse as an IP is dropped.
func Ingress(infraStatus corev1.LoadBalancerStatus) corev1.LoadBalancerStatus {
	var out corev1.LoadBalancerStatus
	for _, in := range infraStatus.Ingress {
		if _, err := netip.ParseAddr(in.IP); err != nil {
			continue
		}
		out.Ingress = append(out.Ingress, corev1.LoadBalancerIngress{IP: in.IP, IPMode: in.IPMode})
	}
	return out
}
