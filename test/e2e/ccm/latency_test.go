package ccm

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// latencyServices is how many Services the latency scenario creates at once (below the quota).
const latencyServices = 10

// testStatusLatency creates Services in a burst and measures, with watches on both clusters,
// the time from MetalLB's address appearing on an infra Service to the same address appearing
// on the tenant Service. It also counts the ccm's API requests per Service from the apiservers'
// audit logs, when the harness writes them.
func testStatusLatency(t *testing.T, s *suite) { measureStatusLatency(t, s, latencyServices, nil) }

func measureStatusLatency(t testing.TB, s *suite, n int, annotations map[string]string) {
	ns := s.namespace(t, "latency")
	b := s.propagate(t, ns, n, annotations)
	lat := slices.Sorted(slices.Values(b.latencies))
	t.Logf("infra address → tenant status, %d Services: min %s p50 %s p99 %s max %s; all addresses on the tenant %s after the first create",
		len(lat), lat[0].Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond),
		lat[len(lat)-1].Round(time.Millisecond), b.done.Sub(b.since).Round(time.Millisecond))
	s.deleteServices(t, b.services)
	reportAPICalls(t, b.since, b.done, n)
}

// burst is what propagate measured.
type burst struct {
	services    []*corev1.Service
	latencies   []time.Duration // per Service: infra address seen → same address on the tenant
	endToEnd    []time.Duration // per Service: created → address on the tenant
	since, done time.Time       // first create; every address on the tenant
}

// propagate creates n LoadBalancer Services in ns at once and measures, with watches on both
// clusters, the time from MetalLB's address appearing on each infra Service to the same
// address appearing on the tenant Service.
func (s *suite) propagate(t testing.TB, ns string, n int, annotations map[string]string) burst {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()

	var mu sync.Mutex
	infraAt := map[types.UID]time.Time{}  // tenant UID → first infra ingress seen
	tenantAt := map[types.UID]time.Time{} // tenant UID → first tenant ingress seen
	watchFirstIngress(t, ctx, env.Management.Config, infraNS, func(svc *corev1.Service) {
		mu.Lock()
		uid := types.UID(svc.Labels[loadbalancer.LabelServiceUID])
		if _, ok := infraAt[uid]; !ok && uid != "" {
			infraAt[uid] = time.Now()
		}
		mu.Unlock()
	})
	watchFirstIngress(t, ctx, env.Tenant.Config, ns, func(svc *corev1.Service) {
		mu.Lock()
		if _, ok := tenantAt[svc.UID]; !ok {
			tenantAt[svc.UID] = time.Now()
		}
		mu.Unlock()
	})

	b := burst{since: time.Now()}
	createdAt := map[types.UID]time.Time{}
	for i := range n {
		svc := s.lbService(t, ns, fmt.Sprintf("svc-%04d", i), func(svc *corev1.Service) { svc.Annotations = annotations })
		createdAt[svc.UID] = time.Now()
		b.services = append(b.services, svc)
	}
	// A burst of n takes about n × (a few tenant requests) at the ccm's client QPS.
	s.eventuallyWithin(t, "every Service's address seen on both sides", max(waitTimeout, time.Duration(n)*200*time.Millisecond), func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, svc := range b.services {
			if infraAt[svc.UID].IsZero() || tenantAt[svc.UID].IsZero() {
				return false, nil
			}
		}
		return true, nil
	})
	b.done = time.Now()
	mu.Lock()
	defer mu.Unlock()
	for _, svc := range b.services {
		b.latencies = append(b.latencies, tenantAt[svc.UID].Sub(infraAt[svc.UID]))
		b.endToEnd = append(b.endToEnd, tenantAt[svc.UID].Sub(createdAt[svc.UID]))
	}
	if os.Getenv("CCM_E2E_DEBUG") != "" {
		for _, svc := range b.services {
			t.Logf("DEBUG %s infra %s tenant %s", svc.Name, infraAt[svc.UID].Format("15:04:05.000"), tenantAt[svc.UID].Format("15:04:05.000"))
		}
	}
	return b
}

// deleteServices deletes tenant Services and waits until their infra Services are gone.
func (s *suite) deleteServices(t testing.TB, svcs []*corev1.Service) {
	for _, svc := range svcs {
		if err := s.tenant.Delete(s.ctx, svc); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
	}
	for _, svc := range svcs {
		s.deleteService(t, svc)
	}
}

// watchFirstIngress calls seen for every Service event in namespace that carries an address.
func watchFirstIngress(t testing.TB, ctx context.Context, cfg *rest.Config, namespace string, seen func(*corev1.Service)) {
	t.Helper()
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, &corev1.ServiceList{}, client.InNamespace(namespace))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if svc, ok := ev.Object.(*corev1.Service); ok && hasIngress(svc) {
				seen(svc)
			}
		}
	}()
}

// reportAPICalls logs the ccm's requests per Service in both clusters, split into the create
// phase (until every address was on the tenant) and the delete phase.
func reportAPICalls(t testing.TB, since, created time.Time, n int) {
	t.Helper()
	for _, c := range []struct {
		cluster *harness.Cluster
		user    string
	}{{env.Management, infraUser}, {env.Tenant, tenantUser}} {
		events, err := c.cluster.AuditEvents(since, func(e harness.AuditEvent) bool {
			return harness.ByUser(c.user)(e) && e.ObjectRef != nil && e.ObjectRef.Resource != "leases"
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == 0 {
			// The ccm wrote to both clusters for every Service; none audited means the log
			// or the filter is wrong, and the no-LIST check below would pass on nothing.
			t.Fatalf("%s: no audited request by %s since %s", c.cluster.Name, c.user, since.Format(time.RFC3339Nano))
		}
		var create, del []harness.AuditEvent
		for _, e := range events {
			if e.StageTimestamp.Before(created) {
				create = append(create, e)
			} else {
				del = append(del, e)
			}
		}
		t.Logf("%s API requests by the ccm for %d Services: create phase %d (%.1f/Service): %s; delete phase %d (%.1f/Service): %s",
			c.cluster.Name, n, len(create), float64(len(create))/float64(n), harness.FormatCounts(harness.CountByKey(create)),
			len(del), float64(len(del))/float64(n), harness.FormatCounts(harness.CountByKey(del)))
		// Watch-driven means no polling: after the informers' initial lists (before since), the
		// ccm must not LIST anything in either cluster. A count, so it cannot flake on a slow box.
		for _, e := range events {
			if e.Verb == "list" {
				t.Errorf("%s: the ccm polled with %s at %s; status and endpoints must come from watches", c.cluster.Name, e.Key(), e.StageTimestamp.Format(time.RFC3339Nano))
			}
		}
	}
}
