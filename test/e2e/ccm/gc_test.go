package ccm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
)

// testOrphanGC: a tenant Service disappears while the ccm is down (its finalizer removed by
// hand). The restarted ccm deletes the orphaned infra Service, and leaves alone an infra
// Service that only looks like one of ours (labels without the ownership annotation).
func testOrphanGC(t *testing.T, s *suite) {
	ns := s.namespace(t, "gc")
	svc := s.lbService(t, ns, "orphan", nil)
	in := s.waitInfra(t, svc, "with an address", hasIngress)

	decoy := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: "decoy", Labels: map[string]string{
			"cluster.x-k8s.io/cluster-name": cluster, "app.kubernetes.io/managed-by": "tenantcloud", "tenantcloud.io/component": "ccm",
			loadbalancer.LabelServiceNamespace: ns, loadbalancer.LabelServiceName: "never-existed", loadbalancer.LabelServiceUID: "0b6c3f2e-8d1a-4c4e-9f1e-2a3b4c5d6e7f",
		}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	s.create(t, s.mgmt, decoy)
	t.Cleanup(func() { _ = s.mgmt.Delete(s.ctx, decoy) })

	s.stopCCM(t)
	s.updateTenant(t, svc, func() { svc.Finalizers = nil })
	if err := s.tenant.Delete(s.ctx, svc); err != nil {
		t.Fatal(err)
	}
	s.eventually(t, "tenant Service gone", func() (bool, error) {
		err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(in), &corev1.Service{}); err != nil {
		t.Fatalf("infra Service should outlive the tenant Service while the ccm is down: %v", err)
	}

	s.startCCM(t)
	s.eventually(t, "orphaned infra Service collected", func() (bool, error) { return s.infraGone(svc) })
	if err := s.mgmt.Get(s.ctx, client.ObjectKeyFromObject(decoy), &corev1.Service{}); err != nil {
		t.Fatalf("the decoy infra Service (not owned) was touched: %v", err)
	}
}
