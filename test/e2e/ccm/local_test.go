package ccm

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/cloud/vmaddr"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// localService creates an ETP=Local LoadBalancer Service with TCP and UDP ports.
func (s *suite) localService(t *testing.T, ns, name string) *corev1.Service {
	return s.lbService(t, ns, name, func(svc *corev1.Service) {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		svc.Spec.Ports = []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}
	})
}

// tenantSlice writes the tenant EndpointSlice name of Service svc, as the tenant's
// EndpointSlice controller (or a hostile tenant) would: one endpoint per entry of nodes, with
// pod addresses 10.100.0.x; an empty node name means no nodeName.
func (s *suite) tenantSlice(t *testing.T, svc *corev1.Service, name string, nodes ...string) {
	t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "e2e.tenantcloud.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("dns"), Port: ptr.To[int32](5353), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
	}
	for i, n := range nodes {
		ep := discoveryv1.Endpoint{Addresses: []string{"10.100.0." + strconv.Itoa(i+1)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
		if n != "" {
			ep.NodeName = ptr.To(n)
		}
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	existing := &discoveryv1.EndpointSlice{}
	if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(sl), existing); err == nil {
		existing.Endpoints = sl.Endpoints
		if err := s.tenant.Update(s.ctx, existing); err != nil {
			t.Fatal(err)
		}
		return
	}
	s.create(t, s.tenant, sl)
}

// wantSlices is what the infra EndpointSlices of a Service with endpoints on ws must hold: each
// VM's VMI addresses of the family, on the infra node running it. The VMs are dual-stack but
// the management apiserver here is single-stack IPv4, so the infra Services are IPv4 only and,
// as the EndpointSlice controller does, get IPv4 slices only (both families:
// test/e2e/dualstack).
func (s *suite) wantSlices(t *testing.T, ws ...worker) map[discoveryv1.AddressType][]string {
	t.Helper()
	out := map[discoveryv1.AddressType][]string{}
	for _, w := range ws {
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: w.vm}, vmi); err != nil {
			t.Fatal(err)
		}
		for _, a := range vmaddr.Addresses(vmi) {
			if a.Is4() {
				out[discoveryv1.AddressTypeIPv4] = append(out[discoveryv1.AddressTypeIPv4], a.String()+"@"+vmi.Status.NodeName)
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

func (s *suite) waitSlices(t *testing.T, svc *corev1.Service, what string, want map[discoveryv1.AddressType][]string) {
	t.Helper()
	var got map[discoveryv1.AddressType][]string
	done := false
	defer func() {
		if !done { // eventually gave up (t.Fatalf unwinds through here)
			t.Logf("infra EndpointSlices %s: got %v, want %v", what, got, want)
		}
	}()
	s.eventually(t, "infra EndpointSlices "+what, func() (bool, error) {
		got = s.infraSlices(t, svc)
		for _, v := range got {
			sort.Strings(v)
		}
		if len(got) != len(want) {
			return false, nil
		}
		for fam, addrs := range want {
			if !slices.Equal(got[fam], addrs) {
				return false, nil
			}
		}
		return true, nil
	})
	done = true
}

// testETPLocal: the infra Service of an ETP=Local Service is selectorless and its endpoints are
// the VMs hosting the tenant's endpoints, in the infra Service's family; they follow a VM being added and
// removed, and vanish when the policy goes back to Cluster.
func testETPLocal(t *testing.T, s *suite) {
	ws := s.waitWorkers(t, 2)
	ns := s.namespace(t, "local")
	svc := s.localService(t, ns, "web")
	s.tenantSlice(t, svc, "web-1", ws[0].node, ws[1].node)
	in := s.waitInfra(t, svc, "selectorless with an address", func(in *corev1.Service) bool {
		return in.Spec.Selector == nil && hasIngress(in)
	})
	if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	if in.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal || in.Spec.HealthCheckNodePort == 0 {
		t.Errorf("infra ETP %s, health-check port %d", in.Spec.ExternalTrafficPolicy, in.Spec.HealthCheckNodePort)
	}
	s.waitSlices(t, svc, "for two VMs", s.wantSlices(t, ws...))
	var sl discoveryv1.EndpointSlice
	if err := s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: loadbalancer.EndpointSliceName(in.Name, corev1.IPv4Protocol)}, &sl); err != nil {
		t.Fatal(err)
	}
	for i, p := range sl.Ports {
		if *p.Port != svc.Spec.Ports[i].NodePort || *p.Protocol != svc.Spec.Ports[i].Protocol || *p.Name != svc.Spec.Ports[i].Name {
			t.Errorf("infra slice port %v for tenant port %+v", p, svc.Spec.Ports[i])
		}
	}
	if sl.Labels[discoveryv1.LabelManagedBy] != loadbalancer.ManagedByValue || len(sl.OwnerReferences) != 1 || sl.OwnerReferences[0].UID != in.UID {
		t.Errorf("infra slice metadata %v %v", sl.Labels, sl.OwnerReferences)
	}
	s.waitTenantIP(t, svc, nil)

	// A VM is added: a third worker, with a tenant endpoint on it.
	s.scaleWorkers(t, 3)
	ws3 := s.waitWorkers(t, 3)
	added := newWorker(ws, ws3)
	s.tenantSlice(t, svc, "web-1", ws[0].node, ws[1].node, added.node)
	s.waitSlices(t, svc, "for three VMs", s.wantSlices(t, ws3...))

	// The VM is removed (scale-down picks it): its endpoint is dropped from the infra slices
	// although the tenant slice still names its node.
	m := s.machineOf(t, added.node)
	s.eventually(t, "machine marked for deletion", func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return false, err
		}
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[clusterv1.DeleteMachineAnnotation] = "true"
		return true, s.mgmt.Update(s.ctx, m)
	})
	s.scaleWorkers(t, 2)
	s.waitSlices(t, svc, "back to two VMs", s.wantSlices(t, ws...))
	s.waitWorkers(t, 2)

	// Back to Cluster: selector again, slices gone.
	s.updateTenant(t, svc, func() { svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster })
	s.waitInfra(t, svc, "with the worker selector", func(in *corev1.Service) bool {
		return in.Spec.Selector != nil && in.Spec.HealthCheckNodePort == 0
	})
	s.waitSlices(t, svc, "deleted", map[discoveryv1.AddressType][]string{})
}

func newWorker(before, after []worker) worker {
	for _, w := range after {
		if !slices.Contains(before, w) {
			return w
		}
	}
	return worker{}
}

// testCraftedEndpointSlice: the tenant writes EndpointSlices naming a node whose providerID is
// another cluster's VM, and an endpoint without nodeName. Neither reaches the infra slices (no
// address of the foreign VM ever appears), a Warning Event says why, and the legitimate
// endpoint still works.
func testCraftedEndpointSlice(t *testing.T, s *suite) {
	ws := s.waitWorkers(t, 2)
	beta := s.betaVM(t)
	crafted := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "crafted-beta"},
		Spec:       corev1.NodeSpec{ProviderID: infra.ProviderID(beta.Name)},
	}
	s.create(t, s.tenant, crafted)
	// Ready, so the lifecycle controller leaves it alone for the duration of the test.
	crafted.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}
	if err := s.tenant.Status().Update(s.ctx, crafted); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.tenant.Delete(s.ctx, crafted) })

	ns := s.namespace(t, "crafted")
	svc := s.localService(t, ns, "web")
	s.tenantSlice(t, svc, "crafted", crafted.Name, "", ws[0].node)
	s.waitEventContaining(t, svc, loadbalancer.ReasonEndpointSkipped, "names no VM of this cluster", "no nodeName")
	s.waitSlices(t, svc, "with only the legitimate VM", s.wantSlices(t, ws[0]))
	for fam, addrs := range s.infraSlices(t, svc) {
		for _, a := range vmaddr.Addresses(beta) {
			for _, got := range addrs {
				if strings.HasPrefix(got, a.String()+"@") {
					t.Errorf("%s slice routes to the other cluster's VM: %s", fam, got)
				}
			}
		}
	}
}
