package loadbalancer

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

var (
	v4, v6  = corev1.IPv4Protocol, corev1.IPv6Protocol
	single  = corev1.IPFamilyPolicySingleStack
	prefer  = corev1.IPFamilyPolicyPreferDualStack
	require = corev1.IPFamilyPolicyRequireDualStack
)

func TestIPFamilies(t *testing.T) {
	tests := []struct {
		name       string
		policy     *corev1.IPFamilyPolicy
		fams       []corev1.IPFamily
		wantPolicy *corev1.IPFamilyPolicy
		wantFams   []corev1.IPFamily
		wantErr    string
	}{
		{"single IPv6", &single, []corev1.IPFamily{v6}, &single, []corev1.IPFamily{v6}, ""},
		{"single with two families keeps the primary", &single, []corev1.IPFamily{v6, v4}, &single, []corev1.IPFamily{v6}, ""},
		{"prefer asks for the primary, the infra adds the other", &prefer, []corev1.IPFamily{v4, v6}, &prefer, []corev1.IPFamily{v4}, ""},
		{"prefer IPv6 first", &prefer, []corev1.IPFamily{v6, v4}, &prefer, []corev1.IPFamily{v6}, ""},
		{"require both in the tenant's order", &require, []corev1.IPFamily{v6, v4}, &require, []corev1.IPFamily{v6, v4}, ""},
		{"no policy", nil, []corev1.IPFamily{v4, v6}, nil, []corev1.IPFamily{v4}, ""},
		{"nothing", nil, nil, nil, nil, ""},
		{"unknown policy", ptr.To(corev1.IPFamilyPolicy("AnyStack")), []corev1.IPFamily{v4}, nil, nil, `"AnyStack" is not one of`},
		{"unknown family", &require, []corev1.IPFamily{v4, "IPv5"}, nil, nil, `"IPv5" is neither IPv4 nor IPv6`},
		{"family twice", &require, []corev1.IPFamily{v6, v6}, nil, nil, "IPv6 twice"},
		{"three families", &require, []corev1.IPFamily{v4, v6, v4}, nil, nil, "at most one IPv4 and one IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol, fams, err := ipFamilies(tenantSvc(func(s *corev1.Service) { s.Spec.IPFamilyPolicy = tt.policy; s.Spec.IPFamilies = tt.fams }))
			if tt.wantErr != "" {
				r, ok := AsRefusal(err)
				if !ok || r.Reason != ReasonInvalidRequest || !strings.Contains(r.Message, tt.wantErr) {
					t.Fatalf("err = %v, want a %s refusal containing %q", err, ReasonInvalidRequest, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(pol, tt.wantPolicy) || !reflect.DeepEqual(fams, tt.wantFams) {
				t.Fatalf("got %v %v %v, want %v %v", ptr.Deref(pol, ""), fams, err, ptr.Deref(tt.wantPolicy, ""), tt.wantFams)
			}
		})
	}
}

func TestCreateFamilies(t *testing.T) {
	tests := []struct {
		name    string
		policy  corev1.IPFamilyPolicy
		tenant  []corev1.IPFamily
		desired []corev1.IPFamily
		want    []corev1.IPFamily
	}{
		{"prefer falls back to the second family", prefer, []corev1.IPFamily{v6, v4}, []corev1.IPFamily{v6}, []corev1.IPFamily{v4}},
		{"prefer of a single-stack tenant has nothing else", prefer, []corev1.IPFamily{v6}, []corev1.IPFamily{v6}, nil},
		{"prefer already fell back", prefer, []corev1.IPFamily{v6, v4}, []corev1.IPFamily{v4}, nil},
		{"require never falls back", require, []corev1.IPFamily{v6, v4}, []corev1.IPFamily{v6, v4}, nil},
		{"single never falls back", single, []corev1.IPFamily{v6}, []corev1.IPFamily{v6}, nil},
	}
	for _, tt := range tests {
		svc := tenantSvc(func(s *corev1.Service) { s.Spec.IPFamilyPolicy = &tt.policy; s.Spec.IPFamilies = tt.tenant })
		desired := &corev1.Service{Spec: corev1.ServiceSpec{IPFamilyPolicy: &tt.policy, IPFamilies: tt.desired}}
		got, ok := createFamilies(svc, desired)
		if ok != (tt.want != nil) || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %v %v, want %v", tt.name, got, ok, tt.want)
		}
	}
}

// invalid builds the error the kube-apiserver returns for a Service it refuses.
func invalid(errs ...*field.Error) error {
	return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), "tc-lb-x", errs)
}

func TestFamilyUnavailable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"require on single-stack", invalid(field.Invalid(field.NewPath("spec", "ipFamilyPolicy"), require, "this cluster is not configured for dual-stack services")), "spec.ipFamilyPolicy"},
		{"family without a range", invalid(field.Invalid(field.NewPath("spec", "ipFamilies").Index(0), v6, "not configured on this cluster")), "spec.ipFamilies[0]"},
		{"other invalid field", invalid(field.Invalid(field.NewPath("spec", "ports").Index(0), 0, "must be between 1 and 65535")), ""},
		{"a tenant-made message on another field", invalid(field.Invalid(field.NewPath("metadata", "annotations"), "", "not configured on this cluster")), ""},
		{"not invalid", apierrors.NewForbidden(corev1.Resource("services"), "x", errors.New("not configured for dual-stack")), ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		if got := familyUnavailable(tt.err); (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: got %q, want it to name %q", tt.name, got, tt.want)
		}
	}
}

func TestIngress(t *testing.T) {
	in := corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
		{IP: "192.0.2.1", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)},
		{Hostname: "evil.example.com"},
		{IP: "not-an-ip"},
		{IP: "2001:db8::1", Ports: []corev1.PortStatus{{Port: 80}}},
	}}
	v4ing := corev1.LoadBalancerIngress{IP: "192.0.2.1", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}
	v6ing := corev1.LoadBalancerIngress{IP: "2001:db8::1"}
	tests := []struct {
		name string
		fams []corev1.IPFamily
		want []corev1.LoadBalancerIngress
	}{
		{"no families: every address, MetalLB's order", nil, []corev1.LoadBalancerIngress{v4ing, v6ing}},
		{"IPv4 first", []corev1.IPFamily{v4, v6}, []corev1.LoadBalancerIngress{v4ing, v6ing}},
		{"IPv6 first", []corev1.IPFamily{v6, v4}, []corev1.LoadBalancerIngress{v6ing, v4ing}},
		{"single-stack tenant: its family only", []corev1.IPFamily{v6}, []corev1.LoadBalancerIngress{v6ing}},
	}
	for _, tt := range tests {
		svc := tenantSvc(func(s *corev1.Service) { s.Spec.IPFamilies = tt.fams })
		if got := Ingress(in, svc); !reflect.DeepEqual(got.Ingress, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got.Ingress, tt.want)
		}
	}
}

func TestServesFamily(t *testing.T) {
	svc := func(fams ...corev1.IPFamily) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{IPFamilies: fams}}
	}
	for _, tt := range []struct {
		svc  *corev1.Service
		fam  corev1.IPFamily
		want bool
	}{
		{svc(v4), v4, true},
		{svc(v4), v6, false},
		{svc(v6, v4), v4, true},
		{svc(), v6, true}, // not defaulted yet: both
	} {
		if got := ServesFamily(tt.svc, tt.fam); got != tt.want {
			t.Errorf("ServesFamily(%v, %s) = %v", tt.svc.Spec.IPFamilies, tt.fam, got)
		}
	}
}
