package loadbalancer

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// FuzzAnnotations drives the annotation allow-list with arbitrary tenant annotations (current
// and deprecated spellings), spec.loadBalancerIP and externalIPs. Whatever the tenant writes:
// no panic; a refusal is a *Refusal and yields nothing; an accepted request only ever names a
// granted pool and granted addresses, at most one per family, with a sharing key scoped to
// this tenant; and the infra Service built from it carries no externalIPs, no health-check
// NodePort and no tenant annotation outside the allow-list.
func FuzzAnnotations(f *testing.F) {
	for _, s := range []struct{ pool, oldPool, ips, oldIPs, spec, key, extra string }{
		{}, {pool: "internal"}, {pool: "foreign"}, {oldPool: "foreign"}, {pool: "internal", oldPool: "public"},
		{ips: "192.0.2.5"}, {ips: "198.51.100.7"}, {ips: " 192.0.2.5 , 2001:DB8::5"}, {ips: "::ffff:192.0.2.5"},
		{ips: "::ffff:198.51.100.1"}, {ips: "192.0.2.5,192.0.2.6"}, {ips: "fe80::1%eth0"}, {ips: "192.0.2.5/32"},
		{spec: "192.0.2.6"}, {spec: "203.0.113.1"}, {ips: "192.0.2.5", spec: "192.0.2.6"}, {oldIPs: "10.10.0.9"},
		{key: "shared"}, {key: "tenant-b.beta.shared"}, {key: strings.Repeat("k", 300)}, {key: "ü/../x"},
		{extra: "metallb.io/ip-allocated-from-pool"}, {pool: " internal ", ips: ",", key: " "},
	} {
		f.Add(s.pool, s.oldPool, s.ips, s.oldIPs, s.spec, s.key, s.extra)
	}
	p := testPolicy()
	f.Fuzz(func(t *testing.T, pool, oldPool, ips, oldIPs, specIP, key, extra string) {
		ann := map[string]string{}
		for k, v := range map[string]string{
			AnnAddressPool: pool, deprecated(AnnAddressPool): oldPool,
			AnnLoadBalancerIPs: ips, deprecated(AnnLoadBalancerIPs): oldIPs, AnnAllowSharedIP: key,
		} {
			if v != "" {
				ann[k] = v
			}
		}
		if extra != "" {
			ann[extra] = "x"
		}
		svc := svcWith(ann, specIP)
		svc.Spec.ExternalIPs = []string{"203.0.113.7"}
		svc.Spec.HealthCheckNodePort = 30999
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}}

		out, err := p.Annotations(svc)
		if err != nil {
			var r *Refusal
			if !errors.As(err, &r) {
				t.Fatalf("refusal is %T %v, want *Refusal", err, err)
			}
			if out != nil {
				t.Fatalf("refused request yielded %v", out)
			}
			if _, err := DesiredService(svc, p); err == nil {
				t.Fatal("DesiredService accepts what Annotations refuses")
			}
			return
		}
		checkGranted(t, p, out)
		desired, err := DesiredService(svc, p)
		if err != nil {
			t.Fatalf("DesiredService refuses what Annotations accepts: %v", err)
		}
		if len(desired.Spec.ExternalIPs) != 0 || desired.Spec.HealthCheckNodePort != 0 || desired.Spec.LoadBalancerIP != "" {
			t.Fatalf("infra Service copies tenant fields: %+v", desired.Spec)
		}
		owned := p.Scope.OwnedAnnotations()
		for k, v := range desired.Annotations {
			if _, ok := out[k]; !ok && owned[k] != v {
				t.Fatalf("infra Service carries annotation %s=%q that is neither ours nor allow-listed", k, v)
			}
		}
		for k, v := range out {
			if desired.Annotations[k] != v {
				t.Fatalf("infra annotation %s=%q, allow-list said %q", k, desired.Annotations[k], v)
			}
		}
		// What was accepted is stable: asking again with the normalised values gives the same.
		again := svcWith(map[string]string{AnnAddressPool: out[AnnAddressPool], AnnLoadBalancerIPs: out[AnnLoadBalancerIPs]}, "")
		if out[AnnLoadBalancerIPs] == "" {
			delete(again.Annotations, AnnLoadBalancerIPs)
		}
		out2, err := p.Annotations(again)
		if err != nil || out2[AnnAddressPool] != out[AnnAddressPool] || out2[AnnLoadBalancerIPs] != out[AnnLoadBalancerIPs] {
			t.Fatalf("normalised request %v gives %v, %v", again.Annotations, out2, err)
		}
	})
}

func checkGranted(t *testing.T, p Policy, out map[string]string) {
	t.Helper()
	for k := range out {
		if k != AnnAddressPool && k != AnnLoadBalancerIPs && k != AnnAllowSharedIP {
			t.Fatalf("unexpected annotation %s in %v", k, out)
		}
	}
	if !p.LB.PoolAllowed(out[AnnAddressPool]) {
		t.Fatalf("pool %q not granted", out[AnnAddressPool])
	}
	if s := out[AnnLoadBalancerIPs]; s != "" {
		families := map[bool]bool{}
		for _, a := range strings.Split(s, ",") {
			addr, err := netip.ParseAddr(a)
			if err != nil || addr.String() != a || addr.Zone() != "" || addr.Is4In6() {
				t.Fatalf("address %q in %q is not a normalised IP", a, s)
			}
			if !p.LB.IPAllowed(addr) {
				t.Fatalf("address %s outside the grant", addr)
			}
			if families[addr.Is4()] {
				t.Fatalf("two addresses of one family in %q", s)
			}
			families[addr.Is4()] = true
		}
	}
	if k, ok := out[AnnAllowSharedIP]; ok {
		checkSharedKey(t, p.Scope, k)
	}
}

func checkSharedKey(t *testing.T, scope infra.Scope, k string) {
	t.Helper()
	prefix := scope.Namespace + "." + scope.ClusterName + "."
	if !strings.HasPrefix(k, prefix) {
		t.Fatalf("sharing key %q not scoped to %s", k, prefix)
	}
	if len(k) > validation.LabelValueMaxLength+len(prefix) || strings.ContainsFunc(k, func(r rune) bool { return r > 127 || r < ' ' }) {
		t.Fatalf("sharing key %q not a plain short value", k)
	}
}

// FuzzSharedIPKey: no key one tenant can write produces a key of another tenant, and the same
// key is always scoped the same way.
func FuzzSharedIPKey(f *testing.F) {
	for _, s := range [][3]string{
		{"tenant-a", "alpha", "shared"}, {"tenant-a", "alpha", "tenant-b.beta.shared"}, {"tenant", "a.alpha", "x"},
		{"tenant-a", "alpha", strings.Repeat("x", 64)}, {"tenant-a", "alpha", "sha256-0123"}, {"a", "b", "ü"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, ns, cluster, key string) {
		scope := infra.Scope{Namespace: ns, ClusterName: cluster}
		if scope.Validate() != nil || strings.Contains(cluster, ".") {
			return // a cluster name is a DNS label in config; Validate allows dotted label values
		}
		other := infra.Scope{Namespace: "tenant-b", ClusterName: "beta"}
		k := SharedIPKey(scope, key)
		checkSharedKey(t, scope, k)
		if k != SharedIPKey(scope, key) {
			t.Fatal("not deterministic")
		}
		if scope != other && strings.HasPrefix(k, other.Namespace+"."+other.ClusterName+".") {
			t.Fatalf("key %q of %v lands in %v's space", key, scope, other)
		}
	})
}
