package ccm

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/test/e2e/tenantlb"
)

// eventually polls cond until it holds; errors are remembered and retried, as the clusters
// are eventually consistent. It fails at once if the ccm has died.
func (s *suite) eventually(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	s.eventuallyWithin(t, what, waitTimeout, cond)
}

// eventuallyWithin is eventually with its own deadline, for waits that grow with a scenario's
// size.
func (s *suite) eventuallyWithin(t testing.TB, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(s.ctx, 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		if err := s.ccmExited(); err != nil {
			return false, err // nothing will change any more
		}
		ok, err := cond()
		if err != nil {
			last = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last error: %v)", what, err, last)
	}
}

// namespace creates a fresh tenant namespace.
func (s *suite) namespace(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "-" + strings.ToLower(rand.String(5))
	s.create(t, s.tenant, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	return name
}

// lbService creates a tenant Service of type LoadBalancer (TCP 80 unless mut changes it) and
// deletes it, waiting for its infra Service to go, when the test ends.
func (s *suite) lbService(t testing.TB, ns, name string, mut func(*corev1.Service)) *corev1.Service {
	t.Helper()
	svc := tenantlb.New(ns, name, mut)
	if err := s.tenant.Create(s.ctx, svc); err != nil {
		t.Fatalf("creating tenant Service %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() { s.deleteService(t, svc) })
	return svc
}

// deleteService deletes a tenant Service and waits until it and its infra Service are gone.
func (s *suite) deleteService(t testing.TB, svc *corev1.Service) {
	t.Helper()
	if err := s.tenant.Delete(s.ctx, svc); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting %s/%s: %v", svc.Namespace, svc.Name, err)
		return
	}
	s.eventually(t, "tenant Service "+svc.Name+" and its infra Service gone", func() (bool, error) {
		err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
		if !apierrors.IsNotFound(err) {
			return false, client.IgnoreNotFound(err)
		}
		return s.infraGone(svc)
	})
}

func infraName(t testing.TB, svc *corev1.Service) string {
	t.Helper()
	name, err := loadbalancer.InfraServiceName(svc.UID)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func (s *suite) infraGone(svc *corev1.Service) (bool, error) {
	name, err := loadbalancer.InfraServiceName(svc.UID)
	if err != nil {
		return false, err
	}
	err = s.mgmt.Get(s.ctx, client.ObjectKey{Namespace: infraNS, Name: name}, &corev1.Service{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	return false, err
}

// waitInfra waits until the infra Service of svc exists and cond (nil: always) holds.
func (s *suite) waitInfra(t testing.TB, svc *corev1.Service, what string, cond func(*corev1.Service) bool) *corev1.Service {
	t.Helper()
	key := client.ObjectKey{Namespace: infraNS, Name: infraName(t, svc)}
	got := &corev1.Service{}
	s.eventually(t, "infra Service of "+svc.Name+" "+what, func() (bool, error) {
		if err := s.mgmt.Get(s.ctx, key, got); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return cond == nil || cond(got), nil
	})
	return got
}

// waitTenantIP waits until the tenant Service's status has an address matching ok and returns it.
func (s *suite) waitTenantIP(t testing.TB, svc *corev1.Service, ok func(netip.Addr) bool) netip.Addr {
	t.Helper()
	var ip netip.Addr
	s.eventually(t, "tenant Service "+svc.Name+" status address", func() (bool, error) {
		got := &corev1.Service{}
		if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(svc), got); err != nil {
			return false, err
		}
		for _, in := range got.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil && (ok == nil || ok(a)) {
				ip = a
				return true, nil
			}
		}
		return false, nil
	})
	return ip
}

func inPrefix(cidr string) func(netip.Addr) bool {
	p := netip.MustParsePrefix(cidr)
	return p.Contains
}

// waitEvent waits for an Event of reason on the tenant object and returns its message.
func (s *suite) waitEvent(t testing.TB, obj client.Object, reason string) string {
	t.Helper()
	return s.waitEventContaining(t, obj, reason)
}

// waitEventContaining waits for an Event of reason on the tenant object whose message holds
// every one of parts. An Event the ccm wrote before its caches caught up (a Node the test just
// created is "no such node" until the ccm's informer has it) is followed by one written when
// the change reaches it; waiting for the first Event of the reason would see only the former.
func (s *suite) waitEventContaining(t testing.TB, obj client.Object, reason string, parts ...string) string {
	t.Helper()
	var msg string
	what := fmt.Sprintf("%s event on %s", reason, obj.GetName())
	if len(parts) > 0 {
		what += fmt.Sprintf(" saying %q", parts)
	}
	s.eventually(t, what, func() (bool, error) {
		var events corev1.EventList
		if err := s.tenant.List(s.ctx, &events, client.InNamespace(obj.GetNamespace())); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name != obj.GetName() || e.InvolvedObject.UID != obj.GetUID() || e.Reason != reason {
				continue
			}
			msg = e.Message
			if containsAll(e.Message, parts) {
				return true, nil
			}
		}
		return false, nil
	})
	return msg
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// waitInfraEvent waits for an Event of reason on the infra object (written by MetalLB).
func (s *suite) waitInfraEvent(t testing.TB, namespace, name, reason string) string {
	t.Helper()
	var msg string
	s.eventually(t, fmt.Sprintf("%s event on infra %s", reason, name), func() (bool, error) {
		var events corev1.EventList
		if err := s.mgmt.List(s.ctx, &events, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == name && e.Reason == reason {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	return msg
}

// mustNotExist fails if the infra Service of svc exists.
func (s *suite) mustNotExist(t testing.TB, svc *corev1.Service) {
	t.Helper()
	gone, err := s.infraGone(svc)
	if err != nil {
		t.Fatal(err)
	}
	if !gone {
		t.Fatalf("infra Service %s exists for %s/%s", infraName(t, svc), svc.Namespace, svc.Name)
	}
}

// updateTenant mutates a tenant object with conflict retries.
func (s *suite) updateTenant(t testing.TB, obj client.Object, mutate func()) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := s.tenant.Get(s.ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return s.tenant.Update(s.ctx, obj)
	})
	if err != nil {
		t.Fatalf("updating %T %s: %v", obj, obj.GetName(), err)
	}
}

// ownedInfraServices counts the infra LoadBalancer Services the ccm owns for this tenant.
func (s *suite) ownedInfraServices(t testing.TB) int {
	t.Helper()
	var list corev1.ServiceList
	if err := s.mgmt.List(s.ctx, &list, client.InNamespace(infraNS), client.MatchingLabels{
		"cluster.x-k8s.io/cluster-name": cluster, "tenantcloud.io/component": loadbalancer.Component,
	}); err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// infraSlices returns the infra EndpointSlices of the infra Service of svc, by family.
func (s *suite) infraSlices(t testing.TB, svc *corev1.Service) map[discoveryv1.AddressType][]string {
	t.Helper()
	var list discoveryv1.EndpointSliceList
	if err := s.mgmt.List(s.ctx, &list, client.InNamespace(infraNS), client.MatchingLabels{discoveryv1.LabelServiceName: infraName(t, svc)}); err != nil {
		t.Fatal(err)
	}
	out := map[discoveryv1.AddressType][]string{}
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			node := ""
			if ep.NodeName != nil {
				node = *ep.NodeName
			}
			out[sl.AddressType] = append(out[sl.AddressType], ep.Addresses[0]+"@"+node)
		}
	}
	return out
}
