package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// lbService is a user's LoadBalancer Service for the web Deployment, with annotations.
func lbService(name string, annotations map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": webApp},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
}

// storyLB: a tenant LoadBalancer Service gets an IP from the granted MetalLB pool through the
// ccm.
func (s *sandbox) storyLB(ctx context.Context) error {
	tenant := s.env.Tenant.Client
	svc := lbService("web", nil)
	step("user: kubectl create Service default/web type=LoadBalancer (ccm → infra Service → MetalLB pool %s)", poolName)
	t0 := time.Now()
	if err := tenant.Create(ctx, svc); err != nil {
		return fmt.Errorf("creating Service default/web: %w", err)
	}
	prefix := netip.MustParsePrefix(poolCIDR)
	var ip string
	err := poll(ctx, "an ingress IP from "+poolCIDR+" on tenant Service default/web", func(ctx context.Context) (bool, error) {
		if err := s.componentsAlive(ctx); err != nil {
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
	ok("Service default/web got EXTERNAL-IP %s (took %s)", ip, since(t0))
	return nil
}

// storyRefusedPool: a Service asking for a MetalLB pool the tenant was not granted gets no
// address, and the user sees why in a Warning Event on the Service.
func (s *sandbox) storyRefusedPool(ctx context.Context) error {
	tenant := s.env.Tenant.Client
	svc := lbService("greedy", map[string]string{"metallb.io/address-pool": otherPool})
	step("user: kubectl create Service default/greedy type=LoadBalancer with metallb.io/address-pool=%s (a pool not granted to this tenant)", otherPool)
	t0 := time.Now()
	if err := tenant.Create(ctx, svc); err != nil {
		return fmt.Errorf("creating Service default/greedy: %w", err)
	}
	var ev corev1.Event
	err := poll(ctx, "a Warning Event on Service default/greedy", func(ctx context.Context) (bool, error) {
		var list corev1.EventList
		if err := tenant.List(ctx, &list, client.InNamespace("default")); err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == "Service" && e.InvolvedObject.Name == svc.Name && e.Type == corev1.EventTypeWarning && e.Reason == "LoadBalancerPoolNotAllowed" {
				ev = e
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	if err := tenant.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		return err
	}
	if len(svc.Status.LoadBalancer.Ingress) > 0 {
		return fmt.Errorf("Service default/greedy got %v from a pool not granted", svc.Status.LoadBalancer.Ingress)
	}
	ok("refused: Warning %s on Service default/greedy: %q; no address (took %s)", ev.Reason, ev.Message, since(t0))
	if err := tenant.Delete(ctx, svc); err != nil {
		return fmt.Errorf("deleting Service default/greedy: %w", err)
	}
	return nil
}
