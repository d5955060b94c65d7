package security_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/e2e/tenantlb"
	"github.com/tenantcloud/tenantcloud/test/infrastate"
)

// lbService creates a tenant LoadBalancer Service (TCP 80 unless mut changes it) in a fresh
// namespace and, when the test ends, deletes it and waits until its infra Service and
// EndpointSlices are gone, so the next row starts from the same infra state.
func (w *world) lbService(t *testing.T, name string, mut func(*corev1.Service)) *corev1.Service {
	t.Helper()
	svc, err := tenantlb.Create(w.ctx, w.tenant, "attack", name, mut)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.tenant.Delete(w.ctx, svc); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting %s: %v", name, err)
		}
		w.eventually(t, "tenant Service "+name+" and its infra objects gone", func() (bool, error) {
			if err := w.tenant.Get(w.ctx, client.ObjectKeyFromObject(svc), &corev1.Service{}); !apierrors.IsNotFound(err) {
				return false, client.IgnoreNotFound(err)
			}
			if err := w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: w.infraName(t, svc)}, &corev1.Service{}); !apierrors.IsNotFound(err) {
				return false, client.IgnoreNotFound(err)
			}
			var slices discoveryv1.EndpointSliceList
			err := w.mgmt.List(w.ctx, &slices, client.InNamespace(infraNS), client.MatchingLabels{discoveryv1.LabelServiceName: w.infraName(t, svc)})
			return err == nil && len(slices.Items) == 0, err
		})
	})
	return svc
}

func (w *world) infraName(t *testing.T, svc *corev1.Service) string {
	t.Helper()
	name, err := loadbalancer.InfraServiceName(svc.UID)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// infraKeys are the infra objects of svc's load balancer, as infrastate.Key names them.
func (w *world) infraKeys(t *testing.T, svc *corev1.Service) []string {
	name := w.infraName(t, svc)
	return []string{
		infrastate.KeyOf("Service", infraNS, name),
		infrastate.KeyOf("EndpointSlice", infraNS, loadbalancer.EndpointSliceName(name, corev1.IPv4Protocol)),
		infrastate.KeyOf("EndpointSlice", infraNS, loadbalancer.EndpointSliceName(name, corev1.IPv6Protocol)),
	}
}

// waitEvent waits for a tenant Event of reason on obj and returns its message.
func (w *world) waitEvent(t *testing.T, obj client.Object, reason string) string {
	t.Helper()
	var msg string
	w.eventually(t, reason+" Warning on "+obj.GetName(), func() (found bool, err error) {
		msg, found, err = tenantlb.Warning(w.ctx, w.tenant, obj, reason)
		return found, err
	})
	return msg
}

// waitInfra waits for svc's infra Service to exist and satisfy cond.
func (w *world) waitInfra(t *testing.T, svc *corev1.Service, what string, cond func(*corev1.Service) bool) *corev1.Service {
	t.Helper()
	in := &corev1.Service{}
	w.eventually(t, "infra Service of "+svc.Name+" "+what, func() (bool, error) {
		if err := w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: w.infraName(t, svc)}, in); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return cond == nil || cond(in), nil
	})
	return in
}

// refusedLB asserts a Warning Event of reason and that the Service got neither an infra
// Service nor a status.
func (w *world) refusedLB(t *testing.T, svc *corev1.Service, reason string) outcome {
	t.Helper()
	msg := w.waitEvent(t, svc, reason)
	err := w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: w.infraName(t, svc)}, &corev1.Service{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("infra Service of a refused Service: %v", err)
	}
	w.must(t, w.tenant.Get(w.ctx, client.ObjectKeyFromObject(svc), svc))
	if len(svc.Status.LoadBalancer.Ingress) > 0 {
		t.Errorf("refused Service got status %v", svc.Status.LoadBalancer.Ingress)
	}
	return refused(fmt.Sprintf("Warning %s %q, no infra Service, no status", reason, truncate(msg, 60)))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func loadBalancerAttacks() []attack {
	ann := func(kv ...string) func(*corev1.Service) {
		return func(svc *corev1.Service) {
			svc.Annotations = map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				svc.Annotations[kv[i]] = kv[i+1]
			}
		}
	}
	simple := func(name, reason string, mut func(*corev1.Service)) func(t *testing.T, w *world) outcome {
		return func(t *testing.T, w *world) outcome { return w.refusedLB(t, w.lbService(t, name, mut), reason) }
	}
	return []attack{
		{"5a", "LB pool not granted (metallb.io/address-pool)", "Warning PoolNotAllowed, no infra Service",
			simple("pool", loadbalancer.ReasonPoolNotAllowed, ann(loadbalancer.AnnAddressPool, "foreign"))},
		{"5b", "LB pool not granted (legacy metallb.universe.tf key)", "Warning PoolNotAllowed, no infra Service",
			simple("legacy-pool", loadbalancer.ReasonPoolNotAllowed, ann("metallb.universe.tf/address-pool", "foreign"))},
		{"5c", "LB IP outside granted ranges (annotation)", "Warning IPNotAllowed, no infra Service",
			simple("ip", loadbalancer.ReasonIPNotAllowed, ann(loadbalancer.AnnLoadBalancerIPs, "203.0.113.5"))},
		{"5d", "LB IP outside granted ranges (spec.loadBalancerIP)", "Warning IPNotAllowed, no infra Service",
			simple("spec-ip", loadbalancer.ReasonIPNotAllowed, func(svc *corev1.Service) { svc.Spec.LoadBalancerIP = "203.0.113.6" })},
		{"5e", "LB joins gamma's shared IP with gamma's key", "key scoped to alpha; MetalLB refuses; no status; gamma untouched", func(t *testing.T, w *world) outcome {
			svc := w.lbService(t, "share", func(svc *corev1.Service) {
				svc.Spec.Ports = []corev1.ServicePort{{Name: "other", Port: 8080, Protocol: corev1.ProtocolTCP}}
				ann(loadbalancer.AnnLoadBalancerIPs, victimIP, loadbalancer.AnnAllowSharedIP, victimKey)(svc)
			})
			in := w.waitInfra(t, svc, "exists", nil)
			want := loadbalancer.SharedIPKey(w.scope, victimKey)
			if got := in.Annotations[loadbalancer.AnnAllowSharedIP]; got != want || got == victimKey {
				t.Errorf("sharing key on the infra Service %q, want %q", got, want)
			}
			w.eventually(t, "MetalLB AllocationFailed on "+in.Name, func() (bool, error) {
				var events corev1.EventList
				if err := w.mgmt.List(w.ctx, &events, client.InNamespace(infraNS)); err != nil {
					return false, err
				}
				return slices.ContainsFunc(events.Items, func(e corev1.Event) bool {
					return e.InvolvedObject.Name == in.Name && e.Reason == "AllocationFailed"
				}), nil
			})
			w.must(t, w.tenant.Get(w.ctx, client.ObjectKeyFromObject(svc), svc))
			w.must(t, w.mgmt.Get(w.ctx, client.ObjectKeyFromObject(in), in))
			if len(svc.Status.LoadBalancer.Ingress) > 0 || len(in.Status.LoadBalancer.Ingress) > 0 {
				t.Errorf("attacker got an address: tenant %v, infra %v", svc.Status.LoadBalancer.Ingress, in.Status.LoadBalancer.Ingress)
			}
			return refused("infra key "+truncate(want, 40)+", MetalLB AllocationFailed, no status", w.infraKeys(t, svc)...)
		}},
		{"5f", "LB with externalIPs and foreign annotations", "Warning ExternalIPsIgnored; neither copied", func(t *testing.T, w *world) outcome {
			svc := w.lbService(t, "extips", func(svc *corev1.Service) {
				svc.Spec.ExternalIPs = []string{"203.0.113.7"}
				ann("metallb.io/ip-allocated-from-pool", "foreign", "example.com/anything", "x")(svc)
			})
			msg := w.waitEvent(t, svc, loadbalancer.ReasonExternalIPsIgnored)
			in := w.waitInfra(t, svc, "exists", nil)
			if len(in.Spec.ExternalIPs) != 0 || in.Annotations["example.com/anything"] != "" || in.Annotations["metallb.io/ip-allocated-from-pool"] == "foreign" {
				t.Errorf("infra Service copies tenant fields: externalIPs %v, annotations %v", in.Spec.ExternalIPs, in.Annotations)
			}
			return refused("Warning ExternalIPsIgnored "+strconv.Quote(truncate(msg, 40))+"; infra: no externalIPs, no tenant annotations", w.infraKeys(t, svc)...)
		}},
		{"5g", "LB with a chosen health-check NodePort (ETP=Local)", "not copied; infra allocates its own", func(t *testing.T, w *world) outcome {
			const hc = 31999
			svc := w.lbService(t, "hcport", func(svc *corev1.Service) {
				svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				svc.Spec.HealthCheckNodePort = hc
			})
			in := w.waitInfra(t, svc, "exists", nil)
			if in.Spec.HealthCheckNodePort == hc {
				t.Errorf("tenant health-check NodePort %d copied", hc)
			}
			return refused(fmt.Sprintf("infra health-check port %d ≠ %d", in.Spec.HealthCheckNodePort, hc), w.infraKeys(t, svc)...)
		}},
		// The tenant cluster is dual-stack, the management cluster single-stack IPv4: the
		// tenant's IP family request is checked against what the infra can serve, and a
		// dual-stack address request against the grant, family by family.
		{"5h", "LB RequireDualStack on a single-stack infra cluster", "Warning IPFamilyUnavailable, no infra Service",
			simple("dual", loadbalancer.ReasonIPFamilyUnavailable, tenantlb.Families(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol))},
		{"5i", "LB SingleStack IPv6, a family the infra cluster lacks", "Warning IPFamilyUnavailable, no infra Service",
			simple("v6", loadbalancer.ReasonIPFamilyUnavailable, tenantlb.Families(corev1.IPFamilyPolicySingleStack, corev1.IPv6Protocol))},
		{"5j", "LB dual-stack IPs, the IPv6 one outside the grant", "Warning IPNotAllowed, no infra Service",
			simple("dual-ips", loadbalancer.ReasonIPNotAllowed, func(svc *corev1.Service) {
				tenantlb.Families(corev1.IPFamilyPolicyPreferDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol)(svc)
				ann(loadbalancer.AnnLoadBalancerIPs, "192.0.2.6,2001:db8:ffff::6")(svc)
			})},
	}
}

// tenantSlice writes an EndpointSlice for svc with one ready endpoint per node name (""
// for no nodeName), as a hostile tenant can.
func (w *world) tenantSlice(t *testing.T, svc *corev1.Service, nodes ...string) {
	t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-crafted", Labels: map[string]string{
			discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "attacker.example.com"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for i, n := range nodes {
		ep := discoveryv1.Endpoint{Addresses: []string{"10.100.0." + strconv.Itoa(i+1)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
		if n != "" {
			ep.NodeName = ptr.To(n)
		}
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	w.create(t, w.tenant, sl)
}

// infraEndpointAddresses lists the addresses in svc's infra EndpointSlices.
func (w *world) infraEndpointAddresses(t *testing.T, svc *corev1.Service) []string {
	t.Helper()
	var list discoveryv1.EndpointSliceList
	w.must(t, w.mgmt.List(w.ctx, &list, client.InNamespace(infraNS), client.MatchingLabels{discoveryv1.LabelServiceName: w.infraName(t, svc)}))
	var out []string
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			out = append(out, ep.Addresses...)
		}
	}
	return out
}

func endpointSliceAttacks() []attack {
	return []attack{
		{"6a", "ETP=Local endpoints on foreign VMs' names / no nodeName", "Warning EndpointSkipped; infra endpoints = our VM only", func(t *testing.T, w *world) outcome {
			svc := w.lbService(t, "local", func(svc *corev1.Service) { svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal })
			w.tenantSlice(t, svc, betaVM, gammaVM, "", w.alphaNode)
			msg := w.waitEvent(t, svc, loadbalancer.ReasonEndpointSkipped)
			var got []string
			w.eventually(t, "infra endpoints of our worker", func() (bool, error) {
				got = w.infraEndpointAddresses(t, svc)
				return len(got) > 0, nil
			})
			for _, a := range got {
				if slices.Contains(w.betaVMAddresses, a) || slices.Contains(w.gammaVMAddresses, a) {
					t.Errorf("infra endpoint %s is a foreign VM's address", a)
				}
				if !slices.Contains(w.alphaWorkerAddresses, a) {
					t.Errorf("infra endpoint %s is not our worker's (%v)", a, w.alphaWorkerAddresses)
				}
			}
			return refused(fmt.Sprintf("Warning EndpointSkipped %q; infra endpoints %v", truncate(msg, 50), got), w.infraKeys(t, svc)...)
		}},
		{"6b", "ETP=Local with only foreign / nodeless endpoints", "Warning EndpointSkipped; no infra endpoints", func(t *testing.T, w *world) outcome {
			svc := w.lbService(t, "local-only-foreign", func(svc *corev1.Service) { svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal })
			w.tenantSlice(t, svc, betaVM, "", gammaVM)
			w.waitEvent(t, svc, loadbalancer.ReasonEndpointSkipped)
			w.waitInfra(t, svc, "exists", nil)
			if got := w.infraEndpointAddresses(t, svc); len(got) != 0 {
				t.Errorf("infra endpoints %v from foreign-only tenant endpoints", got)
			}
			return refused("Warning EndpointSkipped; infra endpoints: none", w.infraKeys(t, svc)...)
		}},
	}
}

// neverInitialised registers a crafted Node and watches it until the ccm's node lifecycle
// controller deletes it (no VM of this cluster behind it): at no point may it lose the
// uninitialized taint, change its providerID or show an address of a foreign VM.
func (w *world) neverInitialised(t *testing.T, name, providerID string) outcome {
	t.Helper()
	wc, err := client.NewWithWatch(env.Tenant.Config, client.Options{})
	w.must(t, err)
	watcher, err := wc.Watch(w.ctx, &corev1.NodeList{}, client.MatchingFields{"metadata.name": name})
	w.must(t, err)
	defer watcher.Stop()
	w.craftedNode(t, name, providerID, nil)
	foreign := append(append([]string{}, w.betaVMAddresses...), w.gammaVMAddresses...)
	events := 0
	for ev := range watcher.ResultChan() {
		n, isNode := ev.Object.(*corev1.Node)
		if !isNode {
			t.Fatalf("watch: %v", ev.Object)
		}
		events++
		if !hasTaint(n, uninitializedTaint) {
			t.Fatalf("crafted Node %s was initialised: %+v", name, n.Spec)
		}
		if n.Spec.ProviderID != providerID {
			t.Fatalf("crafted Node %s got providerID %q", name, n.Spec.ProviderID)
		}
		for _, a := range n.Status.Addresses {
			if slices.Contains(foreign, a.Address) {
				t.Fatalf("crafted Node %s got address %s of a foreign VM", name, a.Address)
			}
		}
		if ev.Type == watch.Deleted {
			return refused(fmt.Sprintf("never initialised, no addresses, deleted by the lifecycle controller (%d updates seen)", events))
		}
	}
	t.Fatalf("watch of %s ended before the Node was deleted", name)
	return outcome{}
}

func nodeAttacks() []attack {
	return []attack{
		{"7a", "Node with providerID of beta's VM (same namespace)", "never initialised, deleted", func(t *testing.T, w *world) outcome {
			return w.neverInitialised(t, "crafted-beta", infra.ProviderID(betaVM))
		}},
		{"7b", "Node with providerID of gamma's VM (other namespace)", "never initialised, deleted", func(t *testing.T, w *world) outcome {
			return w.neverInitialised(t, "crafted-gamma", infra.ProviderID(gammaVM))
		}},
		{"7c", "Node named like beta's VM, no providerID", "never initialised, deleted", func(t *testing.T, w *world) outcome {
			return w.neverInitialised(t, betaVM, "")
		}},
		{"7d", "Node with providerID kubevirt://../tenant-b/gamma-w1", "never initialised, deleted", func(t *testing.T, w *world) outcome {
			return w.neverInitialised(t, "crafted-traversal", "kubevirt://../"+otherNS+"/"+gammaVM)
		}},
		{"7e", "Node claiming our VM with provided-node-ip = beta's IP", "never initialised; beta's IP never an address", func(t *testing.T, w *world) outcome {
			foreignIP := w.betaVMAddresses[0]
			n := w.craftedNode(t, "crafted-node-ip", infra.ProviderID(w.alphaVM), func(n *corev1.Node) {
				n.Annotations = map[string]string{providedNodeIP: foreignIP}
			})
			// The ccm says why it refuses in its log; only then is "still uninitialised" a
			// result rather than a race.
			w.eventually(t, "the ccm refusing the provided node IP", func() (bool, error) {
				b, err := os.ReadFile(w.ccm.LogFile)
				return strings.Contains(string(b), "matches ip: "+foreignIP), err
			})
			w.must(t, w.tenant.Get(w.ctx, client.ObjectKeyFromObject(n), n))
			if !hasTaint(n, uninitializedTaint) {
				t.Errorf("Node claiming our VM with a foreign node IP was initialised")
			}
			for _, a := range n.Status.Addresses {
				if slices.Contains(w.betaVMAddresses, a.Address) {
					t.Errorf("Node got beta's address %s", a.Address)
				}
			}
			return refused("ccm: no cloud address matches " + foreignIP + "; still tainted, no foreign address")
		}},
		{"7f", "Node and providerID names of 253 chars", "never initialised, deleted", func(t *testing.T, w *world) outcome {
			return w.neverInitialised(t, long253(), infra.ProviderID(long253()))
		}},
	}
}

func lbQuotaAttack() attack {
	return attack{"9d", fmt.Sprintf("LoadBalancer Services beyond maxServices (%d)", maxServices), "Warning QuotaExceeded for the next one", func(t *testing.T, w *world) outcome {
		var allow []string
		var owned corev1.ServiceList
		w.must(t, w.mgmt.List(w.ctx, &owned, client.InNamespace(infraNS), client.MatchingLabels{infra.LabelComponent: loadbalancer.Component}))
		for i := len(owned.Items); i < maxServices; i++ {
			svc := w.lbService(t, "fill-"+strconv.Itoa(i), nil)
			w.waitInfra(t, svc, "exists", nil)
			allow = append(allow, w.infraKeys(t, svc)...)
		}
		out := w.refusedLB(t, w.lbService(t, "one-too-many", nil), loadbalancer.ReasonQuotaExceeded)
		out.allow = allow
		return out
	}}
}

func lbMalformedAttack() attack {
	return attack{"10h", "LB annotations: non-IP, unicode, two IPv4s", "Warning LoadBalancerInvalid each", func(t *testing.T, w *world) outcome {
		var res []string
		for _, c := range [][2]string{{"garbage", "192.0.2.5/32"}, {"unicode", "١٩٢.٠.٢.٥"}, {"two", "192.0.2.5,192.0.2.6"}} {
			w.refusedLB(t, w.lbService(t, "bad-"+c[0], func(svc *corev1.Service) {
				svc.Annotations = map[string]string{loadbalancer.AnnLoadBalancerIPs: c[1]}
			}), loadbalancer.ReasonInvalidRequest)
			res = append(res, c[0]+": Warning "+loadbalancer.ReasonInvalidRequest)
		}
		res = append(res, "no infra Service, no status")
		return refused(strings.Join(res, "; "))
	}}
}
