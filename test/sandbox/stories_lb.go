package main

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// storyLB: a tenant LoadBalancer Service gets an IP from the MetalLB pool through the ccm.
func (s *sandbox) storyLB(ctx context.Context) error {
	tenant := s.env.Tenant.Client
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	step("tenant: creating LoadBalancer Service default/web (ccm → management Service → MetalLB pool %s)", poolName)
	if err := tenant.Create(ctx, svc); err != nil {
		return fmt.Errorf("creating Service default/web: %w", err)
	}
	prefix := netip.MustParsePrefix(poolCIDR)
	var ip string
	err := poll(ctx, "an ingress IP from "+poolCIDR+" on tenant Service default/web", func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(); err != nil {
			return false, err
		}
		if err := tenant.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return false, err
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil && prefix.Contains(a) {
				ip = in.IP
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	ok("LoadBalancer default/web got %s", ip)
	return nil
}
