package ccm

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
)

const upstreamFinalizer = "service.kubernetes.io/load-balancer-cleanup"

func hasIngress(svc *corev1.Service) bool { return len(svc.Status.LoadBalancer.Ingress) > 0 }

// testLoadBalancerLifecycle: create, full re-sync on update, type change, delete.
func testLoadBalancerLifecycle(t *testing.T, s *suite) {
	ns := s.namespace(t, "lb")
	svc := s.lbService(t, ns, "web", func(svc *corev1.Service) {
		svc.Spec.Ports = []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}
	})
	in := s.waitInfra(t, svc, "with an address", hasIngress)
	if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}

	// Identity and ownership.
	wantLabels := map[string]string{
		"cluster.x-k8s.io/cluster-name": cluster, "app.kubernetes.io/managed-by": "tenantcloud", "tenantcloud.io/component": "ccm",
		loadbalancer.LabelServiceNamespace: ns, loadbalancer.LabelServiceName: "web", loadbalancer.LabelServiceUID: string(svc.UID),
	}
	for k, v := range wantLabels {
		if in.Labels[k] != v {
			t.Errorf("infra label %s=%q, want %q", k, in.Labels[k], v)
		}
	}
	if !strings.HasPrefix(in.Name, loadbalancer.ServiceNamePrefix) || len(in.Name) > 63 {
		t.Errorf("infra name %q", in.Name)
	}
	if in.Annotations["tenantcloud.io/cluster"] != cluster || in.Annotations[loadbalancer.AnnAddressPool] != "public" {
		t.Errorf("infra annotations %v", in.Annotations)
	}
	// Ports: port = tenant port, targetPort = tenant NodePort, names and protocols kept.
	for i, p := range svc.Spec.Ports {
		ip := in.Spec.Ports[i]
		if ip.Name != p.Name || ip.Port != p.Port || ip.Protocol != p.Protocol || ip.TargetPort != intstr.FromInt32(p.NodePort) {
			t.Errorf("infra port %+v for tenant port %+v", ip, p)
		}
	}
	if !maps.Equal(in.Spec.Selector, map[string]string{"cluster.x-k8s.io/cluster-name": cluster, "cluster.x-k8s.io/role": "worker", "kubevirt.io": "virt-launcher"}) {
		t.Errorf("selector %v", in.Spec.Selector)
	}
	if ptr.Deref(in.Spec.AllocateLoadBalancerNodePorts, true) || in.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster {
		t.Errorf("infra spec %+v", in.Spec)
	}
	ip := s.waitTenantIP(t, svc, inPrefix("192.0.2.0/27"))
	if ip.String() != in.Status.LoadBalancer.Ingress[0].IP {
		t.Errorf("tenant IP %s, infra IP %s", ip, in.Status.LoadBalancer.Ingress[0].IP)
	}
	if !slices.Contains(svc.Finalizers, upstreamFinalizer) {
		t.Errorf("tenant finalizers %v", svc.Finalizers)
	}

	// Full re-sync: every field the tenant may set follows an update, not only ports.
	s.updateTenant(t, svc, func() {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		svc.Annotations = map[string]string{loadbalancer.AnnAddressPool: "internal"}
	})
	in = s.waitInfra(t, svc, "re-synced", func(in *corev1.Service) bool {
		return len(in.Spec.Ports) == 3 && in.Spec.SessionAffinity == corev1.ServiceAffinityClientIP &&
			slices.Equal(in.Spec.LoadBalancerSourceRanges, []string{"10.0.0.0/8"}) && in.Annotations[loadbalancer.AnnAddressPool] == "internal"
	})
	s.waitTenantIP(t, svc, inPrefix("198.51.100.0/28"))

	// Type change: the infra Service goes, the status is cleared, the finalizer removed.
	s.updateTenant(t, svc, func() {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = 0
		}
		svc.Spec.ExternalTrafficPolicy = ""
		svc.Spec.AllocateLoadBalancerNodePorts = nil
		svc.Spec.LoadBalancerSourceRanges = nil
	})
	s.eventually(t, "infra Service removed after type change", func() (bool, error) {
		if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return false, err
		}
		gone, err := s.infraGone(svc)
		return gone && !hasIngress(svc) && !slices.Contains(svc.Finalizers, upstreamFinalizer), err
	})
	if got := s.infraSlices(t, svc); len(got) != 0 {
		t.Errorf("infra slices left: %v", got)
	}
	_ = in
}

// testPoolAndIPSelection: granted pools and addresses are passed to MetalLB, whatever spelling
// the tenant uses.
func testPoolAndIPSelection(t *testing.T, s *suite) {
	ns := s.namespace(t, "pools")
	byPool := s.lbService(t, ns, "by-pool", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{loadbalancer.AnnAddressPool: "internal"}
	})
	byIP := s.lbService(t, ns, "by-ip", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{loadbalancer.AnnLoadBalancerIPs: "192.0.2.25"}
	})
	bySpec := s.lbService(t, ns, "by-spec", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{loadbalancer.AnnAddressPool: "internal"}
		svc.Spec.LoadBalancerIP = "198.51.100.9"
	})
	legacy := s.lbService(t, ns, "legacy", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{"metallb.universe.tf/address-pool": "internal"}
	})
	s.waitTenantIP(t, byPool, inPrefix("198.51.100.0/28"))
	s.waitTenantIP(t, byIP, func(a netip.Addr) bool { return a.String() == "192.0.2.25" })
	s.waitTenantIP(t, bySpec, func(a netip.Addr) bool { return a.String() == "198.51.100.9" })
	s.waitTenantIP(t, legacy, inPrefix("198.51.100.0/28"))
	in := s.waitInfra(t, legacy, "exists", nil)
	if in.Annotations[loadbalancer.AnnAddressPool] != "internal" || in.Annotations["metallb.universe.tf/address-pool"] != "" {
		t.Errorf("deprecated key not mapped: %v", in.Annotations)
	}
	in = s.waitInfra(t, bySpec, "exists", nil)
	if in.Spec.LoadBalancerIP != "" || in.Annotations[loadbalancer.AnnLoadBalancerIPs] != "198.51.100.9" {
		t.Errorf("spec.loadBalancerIP not turned into the annotation: %q %v", in.Spec.LoadBalancerIP, in.Annotations)
	}
}

// testRefusals: requests outside the tenant's grant get a Warning Event and no infra object;
// fields that are never copied are simply absent.
func testRefusals(t *testing.T, s *suite) {
	ns := s.namespace(t, "refuse")
	pool := s.lbService(t, ns, "foreign-pool", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{loadbalancer.AnnAddressPool: "foreign"}
	})
	legacyPool := s.lbService(t, ns, "foreign-pool-legacy", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{"metallb.universe.tf/address-pool": "foreign"}
	})
	ipOut := s.lbService(t, ns, "ip-outside", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{loadbalancer.AnnLoadBalancerIPs: "203.0.113.5"}
	})
	specOut := s.lbService(t, ns, "spec-ip-outside", func(svc *corev1.Service) { svc.Spec.LoadBalancerIP = "203.0.113.6" })
	extIPs := s.lbService(t, ns, "external-ips", func(svc *corev1.Service) {
		svc.Spec.ExternalIPs = []string{"203.0.113.7"}
		svc.Annotations = map[string]string{
			"metallb.io/ip-allocated-from-pool": "foreign", "example.com/anything": "x",
			"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8",
		}
	})
	for _, c := range []struct {
		svc    *corev1.Service
		reason string
		says   string
	}{
		{pool, loadbalancer.ReasonPoolNotAllowed, `"foreign" is not granted to this cluster (allowed: bulk, internal, public)`},
		{legacyPool, loadbalancer.ReasonPoolNotAllowed, `"foreign" is not granted`},
		{ipOut, loadbalancer.ReasonIPNotAllowed, "203.0.113.5 is outside"},
		{specOut, loadbalancer.ReasonIPNotAllowed, "203.0.113.6 is outside"},
	} {
		msg := s.waitEvent(t, c.svc, c.reason)
		if !strings.Contains(msg, c.says) {
			t.Errorf("%s: event %q does not say %q", c.svc.Name, msg, c.says)
		}
		s.mustNotExist(t, c.svc)
	}
	s.waitEvent(t, extIPs, loadbalancer.ReasonExternalIPsIgnored)
	in := s.waitInfra(t, extIPs, "with an address", hasIngress)
	if len(in.Spec.ExternalIPs) != 0 {
		t.Errorf("externalIPs copied: %v", in.Spec.ExternalIPs)
	}
	if _, ok := in.Annotations["example.com/anything"]; ok || in.Annotations["metallb.io/ip-allocated-from-pool"] == "foreign" {
		t.Errorf("tenant annotations copied: %v", in.Annotations)
	}
	if !slices.Equal(in.Spec.LoadBalancerSourceRanges, []string{"10.0.0.0/8"}) {
		t.Errorf("legacy source-range annotation not applied as a field: %v", in.Spec.LoadBalancerSourceRanges)
	}
}

// testRefusedUpdate: a refused change to a working load balancer leaves the infra Service as it
// was.
func testRefusedUpdate(t *testing.T, s *suite) {
	ns := s.namespace(t, "refupd")
	svc := s.lbService(t, ns, "web", nil)
	before := s.waitInfra(t, svc, "with an address", hasIngress)
	ip := s.waitTenantIP(t, svc, nil)
	s.updateTenant(t, svc, func() {
		svc.Annotations = map[string]string{loadbalancer.AnnAddressPool: "foreign"}
	})
	s.waitEvent(t, svc, loadbalancer.ReasonPoolNotAllowed)
	s.updateTenant(t, svc, func() {
		svc.Annotations = map[string]string{loadbalancer.AnnLoadBalancerIPs: "203.0.113.9"}
	})
	s.waitEvent(t, svc, loadbalancer.ReasonIPNotAllowed)
	after := &corev1.Service{}
	if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(before), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("refused updates changed the infra Service: %v → %v", before.Annotations, after.Annotations)
	}
	if got := s.waitTenantIP(t, svc, nil); got != ip {
		t.Errorf("tenant address changed from %s to %s", ip, got)
	}
}

// testForeignSharedIPKey: another tenant's Service holds 192.0.2.20 with a sharing key. A tenant
// that names the same address and the same key (even spelled as the other tenant's scoped key)
// must not get it; two Services of the same tenant sharing a key do share.
func testForeignSharedIPKey(t *testing.T, s *suite) {
	foreignKey := otherNS + "." + otherCluster + ".shared"
	victim := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: otherNS, Name: "beta-lb", Annotations: map[string]string{
			loadbalancer.AnnAddressPool: "public", loadbalancer.AnnLoadBalancerIPs: "192.0.2.20", loadbalancer.AnnAllowSharedIP: foreignKey,
		}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	s.create(t, s.mgmt, victim)
	t.Cleanup(func() { _ = s.mgmt.Delete(s.ctx, victim) })
	s.eventually(t, "the other tenant's Service holds 192.0.2.20", func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(victim), victim); err != nil {
			return false, err
		}
		return hasIngress(victim) && victim.Status.LoadBalancer.Ingress[0].IP == "192.0.2.20", nil
	})

	ns := s.namespace(t, "share")
	for _, key := range []string{"shared", foreignKey} {
		attacker := s.lbService(t, ns, "attacker-"+strings.ReplaceAll(strings.ToLower(key), ".", "-"), func(svc *corev1.Service) {
			svc.Spec.Ports = []corev1.ServicePort{{Name: "other", Port: 8080, Protocol: corev1.ProtocolTCP}}
			svc.Annotations = map[string]string{loadbalancer.AnnLoadBalancerIPs: "192.0.2.20", loadbalancer.AnnAllowSharedIP: key}
		})
		in := s.waitInfra(t, attacker, "exists", nil)
		if got, want := in.Annotations[loadbalancer.AnnAllowSharedIP], infraNS+"."+cluster+"."+key; got != want {
			t.Errorf("sharing key %q, want %q", got, want)
		}
		// MetalLB refuses the allocation: the keys differ.
		s.waitInfraEvent(t, infraNS, in.Name, "AllocationFailed")
		if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(attacker), attacker); err != nil {
			t.Fatal(err)
		}
		if hasIngress(attacker) {
			t.Fatalf("attacker got %v", attacker.Status.LoadBalancer.Ingress)
		}
	}

	// Within one tenant, sharing works.
	a := s.lbService(t, ns, "share-a", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{loadbalancer.AnnLoadBalancerIPs: "192.0.2.21", loadbalancer.AnnAllowSharedIP: "ours"}
	})
	b := s.lbService(t, ns, "share-b", func(svc *corev1.Service) {
		svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 81, Protocol: corev1.ProtocolTCP}}
		svc.Annotations = map[string]string{loadbalancer.AnnLoadBalancerIPs: "192.0.2.21", loadbalancer.AnnAllowSharedIP: "ours"}
	})
	is21 := func(a netip.Addr) bool { return a.String() == "192.0.2.21" }
	s.waitTenantIP(t, a, is21)
	s.waitTenantIP(t, b, is21)
}

// testQuota: at most maxServices load balancers; the next one gets a Warning Event and no
// infra Service.
func testQuota(t *testing.T, s *suite) {
	ns := s.namespace(t, "quota")
	have := s.ownedInfraServices(t)
	var svcs []*corev1.Service
	for i := have; i < maxServices; i++ {
		svcs = append(svcs, s.lbService(t, ns, "lb-"+string(rune('a'+i)), nil))
	}
	for _, svc := range svcs {
		s.waitInfra(t, svc, "exists", nil)
	}
	over := s.lbService(t, ns, "one-too-many", nil)
	msg := s.waitEvent(t, over, loadbalancer.ReasonQuotaExceeded)
	if !strings.Contains(msg, "at most 12") {
		t.Errorf("quota event %q", msg)
	}
	s.mustNotExist(t, over)
	if n := s.ownedInfraServices(t); n != maxServices {
		t.Errorf("%d infra Services, quota %d", n, maxServices)
	}
	// A slot frees up: the waiting Service gets its load balancer when the infra Service is
	// gone, not at the service controller's next backoff (5s and growing).
	s.deleteService(t, svcs[0])
	freed := time.Now()
	s.waitInfra(t, over, "created once a slot is free", nil)
	t.Logf("over-quota Service got its infra Service %s after a slot freed", time.Since(freed).Round(time.Millisecond))
}

// testLoadBalancerClass: Services of our class are served with our own finalizer; Services of
// another class are left alone.
func testLoadBalancerClass(t *testing.T, s *suite) {
	ns := s.namespace(t, "class")
	other := s.lbService(t, ns, "other-class", func(svc *corev1.Service) { svc.Spec.LoadBalancerClass = ptr.To("example.com/other") })
	ours := s.lbService(t, ns, "our-class", func(svc *corev1.Service) { svc.Spec.LoadBalancerClass = ptr.To(lbClass) })
	s.waitInfra(t, ours, "with an address", hasIngress)
	s.waitTenantIP(t, ours, inPrefix("192.0.2.0/27"))
	if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(ours), ours); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ours.Finalizers, []string{loadbalancer.Finalizer}) {
		t.Errorf("finalizers of our-class Service: %v", ours.Finalizers)
	}
	s.mustNotExist(t, other)
	if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(other), other); err != nil {
		t.Fatal(err)
	}
	if len(other.Finalizers) != 0 || hasIngress(other) {
		t.Errorf("other-class Service was touched: %v %v", other.Finalizers, other.Status)
	}
}

// testDualStack: the IP family request is mirrored. Both harness apiservers are single-stack
// IPv4, so PreferDualStack yields an IPv4 infra Service with the policy preserved; the dual-stack
// data path is covered by node addresses and ETP=Local slices of both families.
func testDualStack(t *testing.T, s *suite) {
	ns := s.namespace(t, "dual")
	svc := s.lbService(t, ns, "prefer", func(svc *corev1.Service) {
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
	})
	in := s.waitInfra(t, svc, "with an address", hasIngress)
	if ptr.Deref(in.Spec.IPFamilyPolicy, "") != corev1.IPFamilyPolicyPreferDualStack || !slices.Equal(in.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol}) {
		t.Errorf("infra families %v %v", ptr.Deref(in.Spec.IPFamilyPolicy, ""), in.Spec.IPFamilies)
	}
	s.waitTenantIP(t, svc, inPrefix("192.0.2.0/27"))
}

// testDrift: the infra Service is edited and then deleted behind the ccm's back, and the tenant
// changes a field the upstream service controller does not react to (ipFamilyPolicy); each time
// the infra Service is brought back to what the tenant Service asks for.
func testDrift(t *testing.T, s *suite) {
	ns := s.namespace(t, "drift")
	svc := s.lbService(t, ns, "web", nil)
	in := s.waitInfra(t, svc, "with an address", hasIngress)

	in.Annotations[loadbalancer.AnnAddressPool] = "foreign"
	in.Spec.Selector = map[string]string{"app": "something-else"}
	if err := s.mgmt.Update(s.ctx, in); err != nil {
		t.Fatal(err)
	}
	s.waitInfra(t, svc, "reverted", func(in *corev1.Service) bool {
		return in.Annotations[loadbalancer.AnnAddressPool] == "public" && in.Spec.Selector["cluster.x-k8s.io/role"] == "worker"
	})

	if err := s.mgmt.Delete(s.ctx, in); err != nil {
		t.Fatal(err)
	}
	s.waitInfra(t, svc, "re-created with an address", func(got *corev1.Service) bool { return got.UID != in.UID && hasIngress(got) })
	s.waitTenantIP(t, svc, inPrefix("192.0.2.0/27"))

	s.updateTenant(t, svc, func() { svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack) })
	s.waitInfra(t, svc, "PreferDualStack", func(in *corev1.Service) bool {
		return ptr.Deref(in.Spec.IPFamilyPolicy, "") == corev1.IPFamilyPolicyPreferDualStack
	})
}
