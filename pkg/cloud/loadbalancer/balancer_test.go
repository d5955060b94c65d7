package loadbalancer

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// newTestBalancer builds a Balancer over a fake infra API (no informers: the unit under test is
// ensure/delete) and a recorder that keeps the Events it is given.
func newTestBalancer(t *testing.T, lb config.LoadBalancer, objs ...client.Object) (*Balancer, client.Client, *record.FakeRecorder) {
	t.Helper()
	scheme, err := infra.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	fc := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	ic, err := infra.NewWithReader(testScope, fc, fc)
	if err != nil {
		t.Fatal(err)
	}
	b := New(ic, lb, Options{})
	rec := record.NewFakeRecorder(20)
	b.tenant = &tenantView{recorder: rec}
	return b, fc, rec
}

func svcN(i int, mut func(*corev1.Service)) *corev1.Service {
	return tenantSvc(func(s *corev1.Service) {
		s.Name = fmt.Sprintf("web-%d", i)
		s.UID = types.UID(fmt.Sprintf("0b6c3f2e-8d1a-4c4e-9f1e-2a3b4c5d6e%02d", i))
		s.Finalizers = []string{"service.kubernetes.io/load-balancer-cleanup"}
		if mut != nil {
			mut(s)
		}
	})
}

func infraCount(t *testing.T, c client.Client) int {
	t.Helper()
	var list corev1.ServiceList
	if err := c.List(context.Background(), &list, client.InNamespace(testScope.Namespace)); err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

func TestEnsureRefusalChangesNothing(t *testing.T) {
	ctx := context.Background()
	b, fc, rec := newTestBalancer(t, testPolicy().LB)
	svc := svcN(1, nil)
	if _, err := b.EnsureLoadBalancer(ctx, "", svc, nil); err != nil {
		t.Fatal(err)
	}
	before := &corev1.Service{}
	name, _ := InfraServiceName(svc.UID)
	if err := fc.Get(ctx, client.ObjectKey{Namespace: testScope.Namespace, Name: name}, before); err != nil {
		t.Fatal(err)
	}
	svc.Annotations = map[string]string{AnnAddressPool: "tenant-b-pool"}
	_, err := b.EnsureLoadBalancer(ctx, "", svc, nil)
	if r, ok := AsRefusal(err); !ok || r.Reason != ReasonPoolNotAllowed {
		t.Fatalf("want pool refusal, got %v", err)
	}
	after := &corev1.Service{}
	if err := fc.Get(ctx, client.ObjectKeyFromObject(before), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Fatal("a refused update changed the infra Service")
	}
	if ev := <-rec.Events; ev != "Warning "+ReasonPoolNotAllowed+` address pool "tenant-b-pool" is not granted to this cluster (allowed: internal, public)` {
		t.Fatalf("event %q", ev)
	}
}

func TestEnsureQuota(t *testing.T) {
	ctx := context.Background()
	lb := testPolicy().LB
	lb.MaxServices = 2
	// Another tenant's Service and an unowned one in the namespace do not count.
	foreign := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testScope.Namespace, Name: "capk-lb",
		Labels: map[string]string{infra.LabelClusterName: "alpha"}}}
	b, fc, rec := newTestBalancer(t, lb, foreign)
	for i := range 2 {
		if _, err := b.EnsureLoadBalancer(ctx, "", svcN(i, nil), nil); err != nil {
			t.Fatalf("service %d: %v", i, err)
		}
	}
	// Updating an existing one is not a new load balancer.
	if _, err := b.EnsureLoadBalancer(ctx, "", svcN(0, func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }), nil); err != nil {
		t.Fatalf("update under quota: %v", err)
	}
	_, err := b.EnsureLoadBalancer(ctx, "", svcN(2, nil), nil)
	if r, ok := AsRefusal(err); !ok || r.Reason != ReasonQuotaExceeded {
		t.Fatalf("want quota refusal, got %v", err)
	}
	if n := infraCount(t, fc); n != 3 {
		t.Fatalf("%d infra Services, want 2 + the foreign one", n)
	}
	if ev := <-rec.Events; ev == "" {
		t.Fatal("no event")
	}
}

func TestNameTakenByForeignObject(t *testing.T) {
	ctx := context.Background()
	svc := svcN(1, nil)
	name, _ := InfraServiceName(svc.UID)
	squatter := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testScope.Namespace, Name: name,
		Labels: map[string]string{infra.LabelClusterName: "alpha", LabelServiceUID: string(svc.UID)}}}
	b, fc, _ := newTestBalancer(t, testPolicy().LB, squatter)
	_, err := b.EnsureLoadBalancer(ctx, "", svc, nil)
	if r, ok := AsRefusal(err); !ok || r.Reason != ReasonNameTaken {
		t.Fatalf("want name-taken refusal, got %v", err)
	}
	if err := b.EnsureLoadBalancerDeleted(ctx, "", svc); err != nil {
		t.Fatal(err)
	}
	if err := fc.Get(ctx, client.ObjectKeyFromObject(squatter), &corev1.Service{}); err != nil {
		t.Fatalf("a Service tenantcloud does not own was deleted: %v", err)
	}
}

func TestDeleteOnlyThisIncarnation(t *testing.T) {
	ctx := context.Background()
	b, fc, _ := newTestBalancer(t, testPolicy().LB)
	svc := svcN(1, nil)
	if _, err := b.EnsureLoadBalancer(ctx, "", svc, nil); err != nil {
		t.Fatal(err)
	}
	b.observed(b.GetLoadBalancerName(ctx, "", svc))
	other := svcN(2, nil) // different UID, so a different infra Service
	if err := b.EnsureLoadBalancerDeleted(ctx, "", other); err != nil {
		t.Fatal(err)
	}
	if n := infraCount(t, fc); n != 1 {
		t.Fatalf("%d infra Services left, want 1", n)
	}
	_, exists, err := b.GetLoadBalancer(ctx, "", svc)
	if err != nil || !exists {
		t.Fatalf("GetLoadBalancer = %v, %v", exists, err)
	}
	if err := b.EnsureLoadBalancerDeleted(ctx, "", svc); err != nil {
		t.Fatal(err)
	}
	if n := infraCount(t, fc); n != 0 {
		t.Fatalf("%d infra Services left, want 0", n)
	}
	if _, exists, err := b.GetLoadBalancer(ctx, "", svc); err != nil || exists {
		t.Fatalf("GetLoadBalancer after delete = %v, %v", exists, err)
	}
	name, _ := InfraServiceName(svc.UID)
	if err := fc.Get(ctx, client.ObjectKey{Namespace: testScope.Namespace, Name: name}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Fatalf("infra Service still there: %v", err)
	}
}

func TestWants(t *testing.T) {
	class := "tenantcloud.io/metallb"
	b, _, _ := newTestBalancer(t, testPolicy().LB)
	withClass, _, _ := newTestBalancer(t, testPolicy().LB)
	withClass.class = class
	other := "example.com/other"
	tests := []struct {
		name          string
		svc           *corev1.Service
		plain, classy bool
	}{
		{"no class", svcN(1, nil), true, true},
		{"our class", svcN(1, func(s *corev1.Service) { s.Spec.LoadBalancerClass = &class }), false, true},
		{"other class", svcN(1, func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other }), false, false},
		{"not a load balancer", svcN(1, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }), false, false},
	}
	for _, tt := range tests {
		if got := b.Wants(tt.svc); got != tt.plain {
			t.Errorf("%s without class option: %v", tt.name, got)
		}
		if got := withClass.Wants(tt.svc); got != tt.classy {
			t.Errorf("%s with class option: %v", tt.name, got)
		}
	}
}
