package loadbalancer

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

func ep(addr, node string, ready, terminating *bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready, Terminating: terminating}}
	if node != "" {
		e.NodeName = ptr.To(node)
	}
	return e
}

func slice(t discoveryv1.AddressType, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{AddressType: t, Endpoints: eps}
}

// testResolver knows nodes n1, n2 (this cluster, dual-stack) and refuses everything else
// the way the real resolver does.
func testResolver(calls map[string]int) Resolver {
	return func(node string) (Target, error) {
		calls[node]++
		switch node {
		case "n1":
			return Target{VM: "vm-1", InfraNode: "infra-a", Addrs: []netip.Addr{netip.MustParseAddr("10.244.0.1"), netip.MustParseAddr("fd10::1")}}, nil
		case "n2":
			return Target{VM: "vm-2", InfraNode: "infra-b", Addrs: []netip.Addr{netip.MustParseAddr("10.244.0.2")}}, nil
		case "beta-node":
			return Target{}, errors.New("providerID names no VM of this cluster")
		}
		return Target{}, errors.New("no such node")
	}
}

func addrsOf(eps []discoveryv1.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addresses[0]+"@"+ptr.Deref(e.NodeName, "")+readyMark(e))
	}
	return out
}

func readyMark(e discoveryv1.Endpoint) string {
	if ptr.Deref(e.Conditions.Ready, false) {
		return ""
	}
	return "(not ready)"
}

func TestMapEndpoints(t *testing.T) {
	tests := []struct {
		name        string
		slices      []*discoveryv1.EndpointSlice
		wantV4      []string
		wantV6      []string
		wantSkipped []string // substrings, in order
	}{
		{name: "nothing", wantV4: nil},
		{
			name:   "one pod per node, both families from the VM",
			slices: []*discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, ep("192.168.1.1", "n1", nil, nil), ep("192.168.1.2", "n2", ptr.To(true), nil))},
			wantV4: []string{"10.244.0.1@infra-a", "10.244.0.2@infra-b"},
			wantV6: []string{"fd10::1@infra-a"},
		},
		{
			name: "several pods on one node and both tenant families give one VM endpoint",
			slices: []*discoveryv1.EndpointSlice{
				slice(discoveryv1.AddressTypeIPv4, ep("192.168.1.1", "n1", nil, nil), ep("192.168.1.3", "n1", nil, nil)),
				slice(discoveryv1.AddressTypeIPv6, ep("fd99::1", "n1", nil, nil)),
			},
			wantV4: []string{"10.244.0.1@infra-a"},
			wantV6: []string{"fd10::1@infra-a"},
		},
		{
			name:   "not-ready pods give no endpoint",
			slices: []*discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, ep("192.168.1.1", "n1", ptr.To(false), nil))},
		},
		{
			name: "terminating but serving keeps the VM, not ready",
			slices: []*discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, discoveryv1.Endpoint{Addresses: []string{"192.168.1.1"}, NodeName: ptr.To("n2"),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}})},
			wantV4: []string{"10.244.0.2@infra-b(not ready)"},
		},
		{
			name:        "no nodeName skipped, never a fallback",
			slices:      []*discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, ep("192.168.1.1", "", nil, nil))},
			wantSkipped: []string{"192.168.1.1: endpoint has no nodeName"},
		},
		{
			name: "crafted slice naming another cluster's VM",
			slices: []*discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4,
				ep("192.168.1.1", "beta-node", nil, nil), ep("192.168.1.2", "beta-node", nil, nil), ep("192.168.1.3", "n1", nil, nil))},
			wantV4:      []string{"10.244.0.1@infra-a"},
			wantV6:      []string{"fd10::1@infra-a"},
			wantSkipped: []string{"192.168.1.1 on node beta-node: providerID names no VM", "192.168.1.2 on node beta-node"},
		},
		{
			name:        "unknown node",
			slices:      []*discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, ep("192.168.1.1", "ghost", nil, nil))},
			wantSkipped: []string{"ghost: no such node"},
		},
		{
			name:   "FQDN slices ignored",
			slices: []*discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeFQDN, ep("example.com", "n1", nil, nil))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := map[string]int{}
			got, skipped := MapEndpoints(tt.slices, testResolver(calls))
			if g := addrsOf(got[corev1.IPv4Protocol]); !reflect.DeepEqual(g, tt.wantV4) {
				t.Errorf("IPv4 = %v, want %v", g, tt.wantV4)
			}
			if g := addrsOf(got[corev1.IPv6Protocol]); !reflect.DeepEqual(g, tt.wantV6) {
				t.Errorf("IPv6 = %v, want %v", g, tt.wantV6)
			}
			if len(skipped) != len(tt.wantSkipped) {
				t.Fatalf("skipped %v, want %v", skipped, tt.wantSkipped)
			}
			for i, s := range skipped {
				if !strings.Contains(s.String(), tt.wantSkipped[i]) {
					t.Errorf("skipped[%d] = %q, want it to contain %q", i, s, tt.wantSkipped[i])
				}
			}
			for node, n := range calls {
				if n > 1 {
					t.Errorf("node %s resolved %d times", node, n)
				}
			}
		})
	}
}

func TestDesiredSlice(t *testing.T) {
	p := testPolicy()
	svc := tenantSvc(nil)
	infraSvc := &corev1.Service{}
	infraSvc.Name, infraSvc.UID = "tc-lb-x", "infra-uid"
	sl := DesiredSlice(p, svc, infraSvc, corev1.IPv6Protocol, nil)
	if sl.Name != "tc-lb-x-ipv6" || sl.AddressType != discoveryv1.AddressTypeIPv6 || sl.Namespace != "tenant-a" {
		t.Fatalf("slice %s/%s %s", sl.Namespace, sl.Name, sl.AddressType)
	}
	if sl.Labels[discoveryv1.LabelServiceName] != "tc-lb-x" || sl.Labels[discoveryv1.LabelManagedBy] != ManagedByValue || !p.Scope.Owns(sl) {
		t.Fatalf("labels %v", sl.Labels)
	}
	for k, v := range sl.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			t.Errorf("label key %q: %v", k, errs)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("label %s=%q: %v", k, v, errs)
		}
	}
	if sl.Endpoints == nil || len(sl.OwnerReferences) != 1 || sl.OwnerReferences[0].UID != "infra-uid" {
		t.Fatalf("slice %+v", sl)
	}
	if len(sl.Ports) != 1 || *sl.Ports[0].Port != 30080 {
		t.Fatalf("ports %+v", sl.Ports)
	}
}
