package loadbalancer

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
)

// familyUnavailable returns the infra apiserver's reason when err refuses a Service for an IP
// family request the infra cluster cannot serve (RequireDualStack on a single-stack cluster,
// or a family it has no service CIDR for), else "". The kube-apiserver reports both as Invalid
// with a cause on spec.ipFamilyPolicy ("this cluster is not configured for dual-stack
// services") or spec.ipFamilies[i] ("not configured on this cluster").
func familyUnavailable(err error) string {
	var st apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &st) || st.Status().Details == nil {
		return ""
	}
	var why []string
	for _, c := range st.Status().Details.Causes {
		switch {
		case c.Field == "spec.ipFamilyPolicy" && strings.Contains(c.Message, "not configured for dual-stack"),
			strings.HasPrefix(c.Field, "spec.ipFamilies[") && strings.Contains(c.Message, "not configured on this cluster"):
			why = append(why, c.Field+": "+c.Message)
		}
	}
	return strings.Join(why, "; ")
}

// familyRefusal says, for the tenant, what of svc's IP family request the infra cluster
// cannot give.
func familyRefusal(svc *corev1.Service) string {
	if ptr.Deref(svc.Spec.IPFamilyPolicy, "") == corev1.IPFamilyPolicyRequireDualStack {
		return "ipFamilyPolicy RequireDualStack needs a load-balancer address of each IP family, but the infra cluster " +
			"serves only one family; PreferDualStack gets both where the infra cluster has them and one otherwise"
	}
	return fmt.Sprintf("ipFamilies %v: the infra cluster does not serve this IP family", svc.Spec.IPFamilies)
}

// ipFamilies derives the infra Service's IP family request from the tenant's, which is
// untrusted input: only a known policy and IPv4/IPv6, each at most once, pass.
//   - SingleStack: the tenant's family.
//   - PreferDualStack: the tenant's primary family only. A dual-stack infra apiserver adds the
//     other family itself; a single-stack one keeps the Service single-stack, where it would
//     refuse an explicit second family (create falls back to the tenant's second family when
//     the infra lacks the primary: createFamilies).
//   - RequireDualStack: both, in the tenant's order; a single-stack infra apiserver refuses the
//     Service and the tenant gets a LoadBalancerIPFamilyUnavailable Warning, nothing created.
func ipFamilies(svc *corev1.Service) (*corev1.IPFamilyPolicy, []corev1.IPFamily, error) {
	fams := svc.Spec.IPFamilies
	if err := validFamilies(fams); err != nil {
		return nil, nil, err
	}
	policy := svc.Spec.IPFamilyPolicy
	if policy == nil {
		if len(fams) == 0 {
			return nil, nil, nil
		}
		return nil, fams[:1:1], nil
	}
	switch *policy {
	case corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicySingleStack:
		if len(fams) > 1 {
			fams = fams[:1:1]
		}
	case corev1.IPFamilyPolicyRequireDualStack:
	default:
		return nil, nil, refuse(ReasonInvalidRequest, "spec.ipFamilyPolicy %q is not one of SingleStack, PreferDualStack, RequireDualStack", *policy)
	}
	return ptr.To(*policy), append([]corev1.IPFamily(nil), fams...), nil
}

// validFamilies checks the tenant's spec.ipFamilies: IPv4 and IPv6 only, each at most once.
func validFamilies(fams []corev1.IPFamily) error {
	if len(fams) > 2 {
		return refuse(ReasonInvalidRequest, "spec.ipFamilies %v: at most one IPv4 and one IPv6", fams)
	}
	for i, f := range fams {
		if f != corev1.IPv4Protocol && f != corev1.IPv6Protocol {
			return refuse(ReasonInvalidRequest, "spec.ipFamilies %v: %q is neither IPv4 nor IPv6", fams, f)
		}
		if i > 0 && fams[0] == f {
			return refuse(ReasonInvalidRequest, "spec.ipFamilies %v: %s twice", fams, f)
		}
	}
	return nil
}

// createFamilies is the family request to retry a refused create with: a PreferDualStack
// Service whose primary family the infra cluster lacks gets the tenant's second family (the
// infra is then single-stack in it). ok is false when there is nothing to fall back to.
func createFamilies(svc, desired *corev1.Service) ([]corev1.IPFamily, bool) {
	if ptr.Deref(desired.Spec.IPFamilyPolicy, "") != corev1.IPFamilyPolicyPreferDualStack || len(svc.Spec.IPFamilies) != 2 ||
		!slices.Equal(desired.Spec.IPFamilies, svc.Spec.IPFamilies[:1]) {
		return nil, false
	}
	return []corev1.IPFamily{svc.Spec.IPFamilies[1]}, true
}

// mergeFamilies keeps the infra Service's primary family (immutable once set) and follows the
// desired policy for the secondary: dropped for SingleStack, kept if the infra apiserver added
// one for PreferDualStack, requested for RequireDualStack.
func mergeFamilies(existing, desired []corev1.IPFamily, policy corev1.IPFamilyPolicy) []corev1.IPFamily {
	if len(existing) == 0 {
		return desired
	}
	switch policy {
	case corev1.IPFamilyPolicySingleStack:
		return existing[:1:1]
	case corev1.IPFamilyPolicyPreferDualStack:
		return existing
	default:
		if len(existing) == 1 && len(desired) == 2 {
			return []corev1.IPFamily{existing[0], otherFamily(existing[0])}
		}
		return existing
	}
}

func otherFamily(f corev1.IPFamily) corev1.IPFamily {
	if f == corev1.IPv4Protocol {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

// familyOf is a's IP family; an IPv4-mapped IPv6 address counts as IPv4, as MetalLB parses it.
func familyOf(a netip.Addr) corev1.IPFamily {
	if a.Unmap().Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// ServesFamily reports whether infra Service svc has IP family fam, so its ETP=Local endpoints
// get a slice of that address type. A Service the apiserver has not defaulted yet (no
// families) is taken to serve both.
func ServesFamily(svc *corev1.Service, fam corev1.IPFamily) bool {
	return len(svc.Spec.IPFamilies) == 0 || slices.Contains(svc.Spec.IPFamilies, fam)
}
