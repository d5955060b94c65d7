package loadbalancer

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// FuzzDesiredService builds the infra Service from tenant-controlled spec fields (ports, node
// ports, traffic policy, source ranges in the field and the legacy annotation, session
// affinity, IP family policy, externalIPs, a health-check node port). An accepted Service is
// owned by the tenant's scope in its namespace, never carries externalIPs, a health-check
// node port, a loadBalancerIP or node-port allocation, targets exactly the tenant node ports,
// has valid CIDR source ranges, and merging it onto an infra Service is idempotent and drops
// whatever else was there.
func FuzzDesiredService(f *testing.F) {
	f.Add(int32(80), int32(30080), "TCP", "Cluster", "10.0.0.0/8", "", "None", "SingleStack")
	f.Add(int32(53), int32(0), "UDP", "Local", "", "192.0.2.0/24, 10.0.0.0/8", "ClientIP", "PreferDualStack")
	f.Add(int32(443), int32(31443), "SCTP", "Local", "0.0.0.0/0", "", "", "RequireDualStack")
	f.Add(int32(-1), int32(70000), "", "", "10.0.0.1/8", "fe80::/10,garbage", "x", "y")
	f.Add(int32(0), int32(1), "ICMP", "Local", "::/0", "1.2.3.4/32", "ClientIP", "")
	p := testPolicy()
	f.Fuzz(func(t *testing.T, port, nodePort int32, proto, etp, rangeField, rangeAnn, affinity, family string) {
		svc := svcWith(map[string]string{corev1.AnnotationLoadBalancerSourceRangesKey: rangeAnn}, "")
		if rangeAnn == "" {
			delete(svc.Annotations, corev1.AnnotationLoadBalancerSourceRangesKey)
		}
		svc.Spec.Ports = []corev1.ServicePort{{Name: "p", Port: port, NodePort: nodePort, Protocol: corev1.Protocol(proto)}}
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(etp)
		if rangeField != "" {
			svc.Spec.LoadBalancerSourceRanges = strings.Split(rangeField, ",")
		}
		svc.Spec.SessionAffinity = corev1.ServiceAffinity(affinity)
		if family != "" {
			policy := corev1.IPFamilyPolicy(family)
			svc.Spec.IPFamilyPolicy = &policy
		}
		svc.Spec.ExternalIPs = []string{"203.0.113.9"}
		svc.Spec.HealthCheckNodePort = 31999

		d, err := DesiredService(svc, p)
		if err != nil {
			return
		}
		if !p.Scope.Owns(d) || d.Namespace != p.Scope.Namespace || !strings.HasPrefix(d.Name, ServiceNamePrefix) {
			t.Fatalf("infra Service %s/%s not owned by %v: %v %v", d.Namespace, d.Name, p.Scope, d.Labels, d.Annotations)
		}
		if len(d.Spec.ExternalIPs) != 0 || d.Spec.HealthCheckNodePort != 0 || d.Spec.LoadBalancerIP != "" ||
			d.Spec.AllocateLoadBalancerNodePorts == nil || *d.Spec.AllocateLoadBalancerNodePorts {
			t.Fatalf("infra spec carries tenant-only fields: %+v", d.Spec)
		}
		if len(d.Spec.Ports) != 1 || d.Spec.Ports[0].TargetPort.IntVal != nodePort || nodePort == 0 || d.Spec.Ports[0].NodePort != 0 {
			t.Fatalf("infra ports %+v for tenant port %d/%d", d.Spec.Ports, port, nodePort)
		}
		if LocalTraffic(svc) != (d.Spec.Selector == nil) {
			t.Fatalf("ETP %q gives selector %v", etp, d.Spec.Selector)
		}
		if d.Spec.Selector != nil && !maps.Equal(d.Spec.Selector, WorkerSelector(p.Scope)) {
			t.Fatalf("selector %v reaches beyond the tenant's workers", d.Spec.Selector)
		}
		for _, r := range d.Spec.LoadBalancerSourceRanges {
			if _, err := netip.ParsePrefix(r); err != nil {
				t.Fatalf("source range %q is not a CIDR", r)
			}
		}
		// Merge onto an infra Service that someone (or an older version) filled with extras.
		existing := d.DeepCopy()
		existing.Spec.ExternalIPs = []string{"198.51.100.1"}
		existing.Spec.LoadBalancerIP = "198.51.100.2"
		existing.Annotations[AnnAddressPool] = "foreign"
		existing.Annotations[deprecated(AnnAllowSharedIP)] = "x"
		merged, changed := Merge(existing, d)
		if !changed || len(merged.Spec.ExternalIPs) != 0 || merged.Spec.LoadBalancerIP != "" ||
			merged.Annotations[AnnAddressPool] != d.Annotations[AnnAddressPool] || merged.Annotations[deprecated(AnnAllowSharedIP)] != "" {
			t.Fatalf("merge kept extras: %+v %v", merged.Spec, merged.Annotations)
		}
		if _, again := Merge(merged, d); again {
			t.Fatal("merge is not idempotent")
		}
	})
}
