package loadbalancer

import (
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

var testScope = infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}

func testPolicy() Policy {
	return Policy{Scope: testScope, LB: config.LoadBalancer{
		AllowedPools:    []string{"public", "internal"},
		DefaultPool:     "public",
		AllowedIPRanges: []string{"192.0.2.0/28", "10.10.0.1-10.10.0.9", "2001:db8::/120"},
	}}
}

func svcWith(ann map[string]string, lbIP string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "0b6c3f2e-8d1a-4c4e-9f1e-2a3b4c5d6e7f", Annotations: ann},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: lbIP},
	}
}

func TestAnnotations(t *testing.T) {
	tests := []struct {
		name       string
		ann        map[string]string
		lbIP       string
		policy     func(*Policy)
		want       map[string]string
		wantReason string
	}{
		{name: "nothing asked gets the default pool", want: map[string]string{AnnAddressPool: "public"}},
		{name: "allowed pool", ann: map[string]string{AnnAddressPool: "internal"}, want: map[string]string{AnnAddressPool: "internal"}},
		{name: "deprecated pool key mapped", ann: map[string]string{"metallb.universe.tf/address-pool": "internal"}, want: map[string]string{AnnAddressPool: "internal"}},
		{name: "both pool keys agree", ann: map[string]string{AnnAddressPool: "internal", "metallb.universe.tf/address-pool": "internal"}, want: map[string]string{AnnAddressPool: "internal"}},
		{name: "both pool keys disagree", ann: map[string]string{AnnAddressPool: "internal", "metallb.universe.tf/address-pool": "public"}, wantReason: ReasonInvalidRequest},
		{name: "pool not granted", ann: map[string]string{AnnAddressPool: "tenant-b-pool"}, wantReason: ReasonPoolNotAllowed},
		{name: "deprecated pool not granted", ann: map[string]string{"metallb.universe.tf/address-pool": "tenant-b-pool"}, wantReason: ReasonPoolNotAllowed},
		{name: "no pools configured: auto-assign", policy: func(p *Policy) { p.LB = config.LoadBalancer{} }, want: map[string]string{}},
		{name: "no pools configured: naming one refused", ann: map[string]string{AnnAddressPool: "x"}, policy: func(p *Policy) { p.LB = config.LoadBalancer{} }, wantReason: ReasonPoolNotAllowed},
		{name: "IP in range", ann: map[string]string{AnnLoadBalancerIPs: "192.0.2.5"}, want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "192.0.2.5"}},
		{name: "IP in dash range", ann: map[string]string{AnnLoadBalancerIPs: "10.10.0.9"}, want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "10.10.0.9"}},
		{name: "dual-stack IPs normalised", ann: map[string]string{AnnLoadBalancerIPs: " 192.0.2.5 , 2001:DB8::5"}, want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "192.0.2.5,2001:db8::5"}},
		{name: "IPv4-mapped IPv6 checked as IPv4", ann: map[string]string{AnnLoadBalancerIPs: "::ffff:192.0.2.5"}, want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "192.0.2.5"}},
		{name: "IPv4-mapped outside range", ann: map[string]string{AnnLoadBalancerIPs: "::ffff:198.51.100.1"}, wantReason: ReasonIPNotAllowed},
		{name: "IP outside range", ann: map[string]string{AnnLoadBalancerIPs: "198.51.100.7"}, wantReason: ReasonIPNotAllowed},
		{name: "one of two outside range", ann: map[string]string{AnnLoadBalancerIPs: "192.0.2.5,2001:db9::1"}, wantReason: ReasonIPNotAllowed},
		{name: "two of one family", ann: map[string]string{AnnLoadBalancerIPs: "192.0.2.5,192.0.2.6"}, wantReason: ReasonInvalidRequest},
		{name: "garbage IP", ann: map[string]string{AnnLoadBalancerIPs: "192.0.2.5/32"}, wantReason: ReasonInvalidRequest},
		{name: "zoned IP", ann: map[string]string{AnnLoadBalancerIPs: "fe80::1%eth0"}, wantReason: ReasonInvalidRequest},
		{name: "deprecated IPs key mapped", ann: map[string]string{"metallb.universe.tf/loadBalancerIPs": "192.0.2.6"}, want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "192.0.2.6"}},
		{name: "spec.loadBalancerIP in range", lbIP: "192.0.2.7", want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "192.0.2.7"}},
		{name: "spec.loadBalancerIP outside", lbIP: "203.0.113.1", wantReason: ReasonIPNotAllowed},
		{name: "spec and annotation agree", ann: map[string]string{AnnLoadBalancerIPs: "192.0.2.7"}, lbIP: "192.0.2.7", want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "192.0.2.7"}},
		{name: "spec and annotation disagree", ann: map[string]string{AnnLoadBalancerIPs: "192.0.2.7"}, lbIP: "192.0.2.8", wantReason: ReasonInvalidRequest},
		{name: "no ranges configured allows any IP", ann: map[string]string{AnnLoadBalancerIPs: "203.0.113.1"}, policy: func(p *Policy) { p.LB.AllowedIPRanges = nil },
			want: map[string]string{AnnAddressPool: "public", AnnLoadBalancerIPs: "203.0.113.1"}},
		{name: "shared key scoped", ann: map[string]string{AnnAllowSharedIP: "web"}, want: map[string]string{AnnAddressPool: "public", AnnAllowSharedIP: "tenant-a.alpha.web"}},
		{name: "deprecated shared key scoped", ann: map[string]string{"metallb.universe.tf/allow-shared-ip": "web"}, want: map[string]string{AnnAddressPool: "public", AnnAllowSharedIP: "tenant-a.alpha.web"}},
		{name: "another tenant's scoped key is re-scoped", ann: map[string]string{AnnAllowSharedIP: "tenant-b.beta.web"}, want: map[string]string{AnnAddressPool: "public", AnnAllowSharedIP: "tenant-a.alpha.tenant-b.beta.web"}},
		{name: "other annotations dropped", ann: map[string]string{
			"metallb.io/ip-allocated-from-pool": "x", "service.beta.kubernetes.io/anything": "y", "kubectl.kubernetes.io/last-applied-configuration": "{}",
			"metallb.io/address-pool-x": "z",
		}, want: map[string]string{AnnAddressPool: "public"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			got, err := p.Annotations(svcWith(tt.ann, tt.lbIP))
			if tt.wantReason != "" {
				r, ok := AsRefusal(err)
				if !ok || r.Reason != tt.wantReason {
					t.Fatalf("want refusal %s, got %v", tt.wantReason, err)
				}
				if r.Message == "" {
					t.Fatal("refusal without message")
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSharedIPKey(t *testing.T) {
	a := SharedIPKey(infra.Scope{Namespace: "a-b", ClusterName: "c"}, "k")
	b := SharedIPKey(infra.Scope{Namespace: "a", ClusterName: "b-c"}, "k")
	if a == b {
		t.Fatalf("two tenants got the same key %q", a)
	}
	long := SharedIPKey(testScope, strings.Repeat("k", 100))
	if !strings.HasPrefix(long, "tenant-a.alpha.sha256-") || len(long) > 63 {
		t.Fatalf("long key not hashed: %q", long)
	}
	odd := SharedIPKey(testScope, "a key/with spaces")
	if !strings.HasPrefix(odd, "tenant-a.alpha.sha256-") {
		t.Fatalf("odd key not hashed: %q", odd)
	}
	if SharedIPKey(testScope, "x") == SharedIPKey(infra.Scope{Namespace: "tenant-a", ClusterName: "beta"}, "x") {
		t.Fatal("two clusters in one namespace share a key")
	}
}
