package dualstack_test

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/cloud/vmaddr"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/e2e/tenantlb"
)

var (
	v4, v6  = corev1.IPv4Protocol, corev1.IPv6Protocol
	single  = corev1.IPFamilyPolicySingleStack
	prefer  = corev1.IPFamilyPolicyPreferDualStack
	require = corev1.IPFamilyPolicyRequireDualStack
)

// asks sets the tenant Service's IP family request.
var asks = tenantlb.Families

// TestDualStack: both clusters and the VMs are dual-stack. Workers run first, so the ETP=Local
// and node scenarios have two initialised Nodes.
func TestDualStack(t *testing.T) {
	w := startWorld(t, env, 2)
	nodes := w.waitWorkers(t, 2)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *world, []corev1.Node)
	}{
		{"RequireDualStack", testRequire},
		{"PreferDualStack", testPrefer},
		{"SingleStackUnchanged", testSingleStack},
		{"SingleToDualStackInPlace", testUpgrade},
		{"ETPLocalSlicesPerFamily", testLocalSlices},
		{"NodeAddressesPerFamily", testNodeAddresses},
		{"DualStackKubeletNodeIP", testKubeletNodeIP},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, w, nodes) })
	}
}

// testRequire: RequireDualStack makes an infra Service of both families in the tenant's order;
// MetalLB gives it an address of each and both reach the tenant's status in that order.
func testRequire(t *testing.T, w *world, _ []corev1.Node) {
	for _, order := range [][]corev1.IPFamily{{v4, v6}, {v6, v4}} {
		name := strings.ToLower("require-" + string(order[0]))
		svc := w.lbService(t, name, asks(require, order...))
		in := w.waitInfra(t, svc, "with two addresses", func(in *corev1.Service) bool { return len(in.Status.LoadBalancer.Ingress) == 2 })
		if ptr.Deref(in.Spec.IPFamilyPolicy, "") != require || !slices.Equal(in.Spec.IPFamilies, order) || len(in.Spec.ClusterIPs) != 2 {
			t.Errorf("%s: infra Service %s %v cluster IPs %v", name, ptr.Deref(in.Spec.IPFamilyPolicy, ""), in.Spec.IPFamilies, in.Spec.ClusterIPs)
		}
		got := w.waitStatus(t, svc, poolOf(order[0]), poolOf(order[1]))
		var metallbOrder []string
		for _, ing := range in.Status.LoadBalancer.Ingress {
			metallbOrder = append(metallbOrder, ing.IP)
		}
		t.Logf("%s: tenant status %v (infra families %s, MetalLB's order %v)", name, got, families(in), metallbOrder)
	}
}

// testPrefer: PreferDualStack with IPv6 first gets both families too (the infra apiserver adds
// the second), and the tenant's status lists the IPv6 address first although the infra
// cluster's primary family is IPv4.
func testPrefer(t *testing.T, w *world, _ []corev1.Node) {
	svc := w.lbService(t, "prefer", asks(prefer, v6, v4))
	in := w.waitInfra(t, svc, "with two addresses", func(in *corev1.Service) bool { return len(in.Status.LoadBalancer.Ingress) == 2 })
	if ptr.Deref(in.Spec.IPFamilyPolicy, "") != prefer || families(in) != "IPv6,IPv4" {
		t.Errorf("infra Service %s %s", ptr.Deref(in.Spec.IPFamilyPolicy, ""), families(in))
	}
	w.waitStatus(t, svc, poolV6, poolV4)
}

// testSingleStack: SingleStack Services get one address of their family, as before.
func testSingleStack(t *testing.T, w *world, _ []corev1.Node) {
	for _, fam := range []corev1.IPFamily{v4, v6} {
		svc := w.lbService(t, strings.ToLower("single-"+string(fam)), asks(single, fam))
		in := w.waitInfra(t, svc, "with an address", func(in *corev1.Service) bool { return len(in.Status.LoadBalancer.Ingress) > 0 })
		if families(in) != string(fam) || len(in.Status.LoadBalancer.Ingress) != 1 {
			t.Errorf("%s: infra Service %s, addresses %v", fam, families(in), in.Status.LoadBalancer.Ingress)
		}
		w.waitStatus(t, svc, poolOf(fam))
	}
}

// testUpgrade: a SingleStack Service changed to RequireDualStack keeps its infra Service (same
// object, updated) and gains the second address.
func testUpgrade(t *testing.T, w *world, _ []corev1.Node) {
	svc := w.lbService(t, "upgrade", nil)
	before := w.waitInfra(t, svc, "with an address", func(in *corev1.Service) bool { return len(in.Status.LoadBalancer.Ingress) == 1 })
	w.waitStatus(t, svc, poolV4)
	w.updateTenant(t, svc, asks(require, v4, v6))
	after := w.waitInfra(t, svc, "dual-stack with two addresses", func(in *corev1.Service) bool {
		return families(in) == "IPv4,IPv6" && len(in.Status.LoadBalancer.Ingress) == 2
	})
	if after.UID != before.UID {
		t.Errorf("infra Service re-created (%s → %s), want it updated in place", before.UID, after.UID)
	}
	w.waitStatus(t, svc, poolV4, poolV6)
}

// testLocalSlices: an ETP=Local RequireDualStack Service whose tenant endpoints (a slice per
// family, as the tenant's EndpointSlice controller writes them) sit on both workers gets an
// infra EndpointSlice per family, each holding the VMs' addresses of that family on their infra
// nodes. Made SingleStack, its infra Service drops IPv6 and so does the IPv6 slice.
func testLocalSlices(t *testing.T, w *world, nodes []corev1.Node) {
	svc := w.lbService(t, "local", func(svc *corev1.Service) {
		asks(require, v4, v6)(svc)
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	for i, at := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: strings.ToLower("local-" + string(at)), Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "e2e.tenantcloud.io"}},
			AddressType: at,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for j, n := range nodes {
			addr := fmt.Sprintf("10.100.%d.%d", i, j+1)
			if at == discoveryv1.AddressTypeIPv6 {
				addr = fmt.Sprintf("fd00:100::%d", j+1)
			}
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr.To(n.Name),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		w.create(t, w.tenant, sl)
	}
	want := w.vmEndpoints(t, nodes)
	in := w.waitInfra(t, svc, "selectorless, dual-stack", func(in *corev1.Service) bool {
		return in.Spec.Selector == nil && families(in) == "IPv4,IPv6"
	})
	w.waitSlices(t, in, want)

	w.updateTenant(t, svc, asks(single, v4))
	w.waitInfra(t, svc, "IPv4 only", func(in *corev1.Service) bool { return families(in) == "IPv4" })
	w.waitSlices(t, in, map[corev1.IPFamily][]string{v4: want[v4]})
}

// vmEndpoints is what the infra slices of a Service with endpoints on nodes must hold: per
// family, each VM's VMI address of that family on the infra node running it.
func (w *world) vmEndpoints(t *testing.T, nodes []corev1.Node) map[corev1.IPFamily][]string {
	t.Helper()
	out := map[corev1.IPFamily][]string{}
	for _, n := range nodes {
		vmi := w.vmiOf(t, &n)
		for _, a := range vmaddr.Addresses(vmi) {
			fam := v4
			if a.Is6() {
				fam = v6
			}
			out[fam] = append(out[fam], a.String()+"@"+vmi.Status.NodeName)
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	if len(out[v4]) != len(nodes) || len(out[v6]) != len(nodes) {
		t.Fatalf("VMs are not dual-stack: %v", out)
	}
	return out
}

// waitSlices waits until the infra EndpointSlices of infra Service in are exactly want: one
// slice per family, named per family, of that address type.
func (w *world) waitSlices(t *testing.T, in *corev1.Service, want map[corev1.IPFamily][]string) {
	t.Helper()
	var got map[corev1.IPFamily][]string
	w.eventually(t, fmt.Sprintf("infra EndpointSlices %v", want), func() (bool, error) {
		var list discoveryv1.EndpointSliceList
		if err := w.mgmt.List(w.ctx, &list, client.InNamespace(infraNS), client.MatchingLabels{discoveryv1.LabelServiceName: in.Name}); err != nil {
			return false, err
		}
		got = map[corev1.IPFamily][]string{}
		for _, sl := range list.Items {
			fam := corev1.IPFamily(sl.AddressType)
			if sl.Name != loadbalancer.EndpointSliceName(in.Name, fam) || got[fam] != nil {
				return false, fmt.Errorf("unexpected slice %s of type %s", sl.Name, sl.AddressType)
			}
			got[fam] = []string{}
			for _, ep := range sl.Endpoints {
				got[fam] = append(got[fam], ep.Addresses[0]+"@"+ptr.Deref(ep.NodeName, ""))
			}
			sort.Strings(got[fam])
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
}

// testNodeAddresses: each worker's tenant Node has an InternalIP of each family, exactly the
// VMI's pod-network addresses in their order.
func testNodeAddresses(t *testing.T, w *world, nodes []corev1.Node) {
	for _, n := range nodes {
		vmi := w.vmiOf(t, &n)
		var want, got []string
		for _, a := range vmaddr.Addresses(vmi) {
			want = append(want, a.String())
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				got = append(got, a.Address)
			}
		}
		if !slices.Equal(got, want) || len(got) != 2 || netip.MustParseAddr(got[0]).Is4() == netip.MustParseAddr(got[1]).Is4() {
			t.Errorf("Node %s InternalIPs %v, want one per family from VMI %s: %v", n.Name, got, vmi.Name, want)
		}
	}
}

// testKubeletNodeIP (harvester/harvester#7275): a Node registered by a dual-stack kubelet
// (--node-ip IPv6,IPv4 → the provided-node-ip annotation) is initialised only if the cloud
// reports an address matching each of its IPs (k8s.io/cloud-provider since 1.29); the ccm
// reports both families of the VM, so the Node gets both InternalIPs, the kubelet's order.
func testKubeletNodeIP(t *testing.T, w *world, nodes []corev1.Node) {
	vmi := w.vmiOf(t, &nodes[0])
	var v4addr, v6addr string
	for _, a := range vmaddr.Addresses(vmi) {
		if a.Is4() {
			v4addr = a.String()
		} else {
			v6addr = a.String()
		}
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "dual-kubelet", Annotations: map[string]string{
			"alpha.kubernetes.io/provided-node-ip": v6addr + "," + v4addr}},
		Spec: corev1.NodeSpec{ProviderID: nodes[0].Spec.ProviderID,
			Taints: []corev1.Taint{{Key: uninitialized, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
	}
	w.create(t, w.tenant, n)
	t.Cleanup(func() { _ = w.tenant.Delete(w.ctx, n) })
	var got []string
	w.eventually(t, "Node "+n.Name+" initialised with both addresses", func() (bool, error) {
		if err := w.tenant.Get(w.ctx, client.ObjectKeyFromObject(n), n); err != nil {
			return false, err
		}
		got = got[:0]
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				got = append(got, a.Address)
			}
		}
		return !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == uninitialized }) && len(got) > 0, nil
	})
	if !slices.Equal(got, []string{v6addr, v4addr}) {
		t.Errorf("InternalIPs %v, want the kubelet's %s,%s", got, v6addr, v4addr)
	}
}

func (w *world) vmiOf(t *testing.T, n *corev1.Node) *kubevirtv1.VirtualMachineInstance {
	t.Helper()
	vm, err := infra.VMNameFromProviderID(n.Spec.ProviderID)
	if err != nil {
		t.Fatal(err)
	}
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: vm}, vmi); err != nil {
		t.Fatal(err)
	}
	return vmi
}

// waitWorkers waits for n tenant Nodes the ccm has initialised (providerID, addresses, no
// uninitialized taint) and returns them by name.
func (w *world) waitWorkers(t *testing.T, n int) []corev1.Node {
	t.Helper()
	var ready []corev1.Node
	w.eventually(t, fmt.Sprintf("%d initialised worker Nodes", n), func() (bool, error) {
		var list corev1.NodeList
		if err := w.tenant.List(w.ctx, &list); err != nil {
			return false, err
		}
		ready = ready[:0]
		for _, node := range list.Items {
			if node.Spec.ProviderID != "" && len(node.Status.Addresses) > 0 && !slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool {
				return t.Key == uninitialized
			}) {
				ready = append(ready, node)
			}
		}
		return len(ready) == n, nil
	})
	sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })
	return ready
}

// updateTenant applies mutate to the latest tenant Service, retrying on conflicts.
func (w *world) updateTenant(t *testing.T, svc *corev1.Service, mutate func(*corev1.Service)) {
	t.Helper()
	w.eventually(t, "updating tenant Service "+svc.Name, func() (bool, error) {
		if err := w.tenant.Get(w.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return false, err
		}
		mutate(svc)
		err := w.tenant.Update(w.ctx, svc)
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return err == nil, err
	})
}

// uninitialized is the taint a Node registered under an external cloud provider carries until
// the ccm has initialised it.
const uninitialized = "node.cloudprovider.kubernetes.io/uninitialized"

func poolOf(f corev1.IPFamily) string {
	if f == v6 {
		return poolV6
	}
	return poolV4
}
