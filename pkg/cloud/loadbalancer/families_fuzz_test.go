package loadbalancer

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// FuzzIPFamilies: whatever IP family request the tenant writes, the infra Service asks for a
// known policy and at most one IPv4 and one IPv6 family taken from the tenant's own list, in
// its order; RequireDualStack is passed on whole, the others ask for the primary only.
func FuzzIPFamilies(f *testing.F) {
	f.Add("RequireDualStack", "IPv6", "IPv4", 2)
	f.Add("PreferDualStack", "IPv4", "IPv6", 2)
	f.Add("SingleStack", "IPv6", "", 1)
	f.Add("", "IPv4", "IPv4", 2)
	f.Add("DualStack", "ipv4", "IPv5", 3)
	f.Fuzz(func(t *testing.T, policy, f1, f2 string, n int) {
		svc := tenantSvc(nil)
		if policy != "" {
			svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicy(policy))
		}
		tenant := []corev1.IPFamily{corev1.IPFamily(f1), corev1.IPFamily(f2), corev1.IPFamily(f1)}[:min(max(n, 0), 3)]
		svc.Spec.IPFamilies = tenant
		pol, fams, err := ipFamilies(svc)
		if err != nil {
			if _, ok := AsRefusal(err); !ok {
				t.Fatalf("error %v is not a refusal the tenant is told about", err)
			}
			return
		}
		switch p := ptr.Deref(pol, "none"); p {
		case "none", corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack:
		default:
			t.Fatalf("infra policy %q", p)
		}
		if len(fams) > 2 || (len(fams) == 2 && fams[0] == fams[1]) {
			t.Fatalf("infra families %v", fams)
		}
		for _, fam := range fams {
			if fam != corev1.IPv4Protocol && fam != corev1.IPv6Protocol {
				t.Fatalf("infra family %q", fam)
			}
		}
		if !slices.Equal(fams, tenant[:len(fams)]) {
			t.Fatalf("infra families %v are not the tenant's %v in order", fams, tenant)
		}
		if ptr.Deref(pol, "") != corev1.IPFamilyPolicyRequireDualStack && len(fams) > 1 {
			t.Fatalf("%s asks the infra for %v", ptr.Deref(pol, "none"), fams)
		}
	})
}
