package dualstack_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

// TestDualStackRefusedOnSingleStackInfra: a dual-stack tenant on a single-stack (IPv4)
// management cluster, the real MetalLB there. What the infra cluster cannot serve is refused
// with a Warning naming why and leaves no infra Service behind (nor changes an existing one);
// PreferDualStack degrades to the family the infra has, whichever the tenant's order.
func TestDualStackRefusedOnSingleStackInfra(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := harness.StartWith(ctx, harness.Options{TenantDualStack: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
	})
	lb, err := metallb.Start(ctx, e.Management.Kubeconfig, e.Assets.BinDir, metallb.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lb.Stop(); err != nil {
			t.Error(err)
		}
	})
	w := startWorld(t, e, 0)

	t.Run("RequireDualStackRefused", func(t *testing.T) {
		svc := w.lbService(t, "require", asks(require, v4, v6))
		msg := w.waitWarning(t, svc, loadbalancer.ReasonIPFamilyUnavailable)
		if !strings.Contains(msg, "RequireDualStack") || !strings.Contains(msg, "not created") {
			t.Errorf("Warning %q does not say that RequireDualStack was not served", msg)
		}
		w.noLoadBalancer(t, svc)
	})
	t.Run("SingleStackOfMissingFamilyRefused", func(t *testing.T) {
		svc := w.lbService(t, "single-v6", asks(single, v6))
		msg := w.waitWarning(t, svc, loadbalancer.ReasonIPFamilyUnavailable)
		if !strings.Contains(msg, "IPv6") {
			t.Errorf("Warning %q does not name the family", msg)
		}
		w.noLoadBalancer(t, svc)
	})
	t.Run("PreferDualStackDegrades", func(t *testing.T) {
		for _, order := range [][]corev1.IPFamily{{v4, v6}, {v6, v4}} {
			svc := w.lbService(t, strings.ToLower("prefer-"+string(order[0])), asks(prefer, order...))
			in := w.waitInfra(t, svc, "with an address", func(in *corev1.Service) bool { return len(in.Status.LoadBalancer.Ingress) > 0 })
			if families(in) != "IPv4" || ptr.Deref(in.Spec.IPFamilyPolicy, "") != prefer {
				t.Errorf("%v: infra Service %s %s, want PreferDualStack IPv4", order, ptr.Deref(in.Spec.IPFamilyPolicy, ""), families(in))
			}
			w.waitStatus(t, svc, poolV4)
		}
	})
	t.Run("RequireDualStackUpdateRefusedKeepsInfra", func(t *testing.T) {
		svc := w.lbService(t, "keep", nil)
		before := w.waitInfra(t, svc, "with an address", func(in *corev1.Service) bool { return len(in.Status.LoadBalancer.Ingress) == 1 })
		addr := w.waitStatus(t, svc, poolV4)
		w.updateTenant(t, svc, asks(require, v4, v6))
		w.waitWarning(t, svc, loadbalancer.ReasonIPFamilyUnavailable)
		after := &corev1.Service{}
		if err := w.mgmt.Get(w.ctx, w.infraKey(t, svc), after); err != nil {
			t.Fatal(err)
		}
		if after.UID != before.UID || families(after) != "IPv4" || ptr.Deref(after.Spec.IPFamilyPolicy, "") != single ||
			len(after.Status.LoadBalancer.Ingress) != 1 || after.Status.LoadBalancer.Ingress[0].IP != addr[0].String() {
			t.Errorf("infra Service changed by a refused update: %s %s %v", ptr.Deref(after.Spec.IPFamilyPolicy, ""), families(after), after.Status.LoadBalancer.Ingress)
		}
		w.waitStatus(t, svc, poolV4)
	})
}

// noLoadBalancer asserts svc got neither an infra Service nor a status.
func (w *world) noLoadBalancer(t *testing.T, svc *corev1.Service) {
	t.Helper()
	if err := w.mgmt.Get(w.ctx, w.infraKey(t, svc), &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("infra Service of a refused Service: %v", err)
	}
	if err := w.tenant.Get(w.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Status.LoadBalancer.Ingress) > 0 {
		t.Errorf("refused Service got status %v", svc.Status.LoadBalancer.Ingress)
	}
}
