package harness

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDualStackOption: ManagementDualStack makes only the management apiserver dual-stack. A
// RequireDualStack Service there gets a cluster IP of each family from the two ranges, in the
// order asked; the single-stack tenant refuses the same Service, as a single-stack cluster does.
func TestDualStackOption(t *testing.T) {
	ctx := ctxT(t)
	e, err := StartWith(ctx, Options{ManagementDualStack: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
	})
	svc := func() *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dual"},
			Spec: corev1.ServiceSpec{
				Ports:          []corev1.ServicePort{{Port: 80}},
				IPFamilyPolicy: ptr(corev1.IPFamilyPolicyRequireDualStack),
				IPFamilies:     []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
			},
		}
	}
	mgmt := svc()
	if err := e.Management.Client.Create(ctx, mgmt); err != nil {
		t.Fatalf("dual-stack management refused RequireDualStack: %v", err)
	}
	ranges := []netip.Prefix{netip.MustParsePrefix(ServiceCIDRv6), netip.MustParsePrefix(ServiceCIDRv4)}
	if len(mgmt.Spec.ClusterIPs) != 2 {
		t.Fatalf("management cluster IPs %v, want one of each family", mgmt.Spec.ClusterIPs)
	}
	for i, ip := range mgmt.Spec.ClusterIPs {
		if !ranges[i].Contains(netip.MustParseAddr(ip)) {
			t.Errorf("cluster IP %d = %s, want one from %s", i, ip, ranges[i])
		}
	}
	err = e.Tenant.Client.Create(ctx, svc())
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "not configured for dual-stack") {
		t.Fatalf("single-stack tenant on RequireDualStack: %v, want Invalid (not configured for dual-stack)", err)
	}
}
