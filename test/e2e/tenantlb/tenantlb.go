// Package tenantlb is what the end-to-end suites do with tenant LoadBalancer Services: build
// them (so every suite asks the ccm for the same thing and a scenario states only what it
// changes) and read the Warnings the ccm records on them.
package tenantlb

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// New is tenant Service namespace/name of type LoadBalancer, selecting app=name, with one TCP
// port 80 named http, changed by each of muts in turn.
func New(namespace, name string, muts ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, mut := range muts {
		if mut != nil {
			mut(svc)
		}
	}
	return svc
}

// Create creates New(namespace, name, muts...) in a fresh tenant namespace named nsPrefix plus
// a random suffix, so scenarios do not see each other's Services, Events or EndpointSlices.
func Create(ctx context.Context, tenant client.Client, nsPrefix, name string, muts ...func(*corev1.Service)) (*corev1.Service, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsPrefix + "-" + strings.ToLower(rand.String(5))}}
	if err := tenant.Create(ctx, ns); err != nil {
		return nil, fmt.Errorf("creating tenant namespace %s: %w", ns.Name, err)
	}
	svc := New(ns.Name, name, muts...)
	if err := tenant.Create(ctx, svc); err != nil {
		return nil, fmt.Errorf("creating tenant Service %s/%s: %w", ns.Name, name, err)
	}
	return svc, nil
}

// Families sets the Service's IP family request: policy and families in order.
func Families(policy corev1.IPFamilyPolicy, fams ...corev1.IPFamily) func(*corev1.Service) {
	return func(svc *corev1.Service) { svc.Spec.IPFamilyPolicy, svc.Spec.IPFamilies = &policy, fams }
}

// Warning returns the message of a Warning Event of reason on tenant object obj, and whether
// there is one.
func Warning(ctx context.Context, tenant client.Client, obj client.Object, reason string) (string, bool, error) {
	var events corev1.EventList
	if err := tenant.List(ctx, &events, client.InNamespace(obj.GetNamespace())); err != nil {
		return "", false, err
	}
	for _, e := range events.Items {
		if e.InvolvedObject.UID == obj.GetUID() && e.Reason == reason && e.Type == corev1.EventTypeWarning {
			return e.Message, true, nil
		}
	}
	return "", false, nil
}
