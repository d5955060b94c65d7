package ccm

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// latencyServices is how many Services the latency scenario creates at once (below the quota).
const latencyServices = 10

// TestStatusLatencyScale is the latency scenario at scale, opt-in (it is a measurement, not a
// check): CCM_E2E_SCALE=100 go test -run TestStatusLatencyScale ./test/e2e/ccm/
func TestStatusLatencyScale(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("CCM_E2E_SCALE"))
	if err != nil || n < 1 {
		t.Skip("set CCM_E2E_SCALE=<number of Services> to measure status latency at scale")
	}
	s := startSuite(t, 0)
	// envtest's service range is a /24 in both clusters; more ClusterIPs come from an extra
	// ServiceCIDR (networking.k8s.io/v1, GA since Kubernetes 1.33).
	for _, c := range []client.Client{s.mgmt, s.tenant} {
		s.create(t, c, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "scale"},
			Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.1.0.0/20"}}})
	}
	measureStatusLatency(t, s, n, map[string]string{loadbalancer.AnnAddressPool: "bulk"})
}

// testStatusLatency creates Services in a burst and measures, with watches on both clusters,
// the time from MetalLB's address appearing on an infra Service to the same address appearing
// on the tenant Service. It also counts the ccm's API requests per Service from the apiservers'
// audit logs, when the harness writes them.
func testStatusLatency(t *testing.T, s *suite) { measureStatusLatency(t, s, latencyServices, nil) }

func measureStatusLatency(t *testing.T, s *suite, n int, annotations map[string]string) {
	ns := s.namespace(t, "latency")
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

	since := time.Now()
	var svcs []*corev1.Service
	for i := range n {
		svcs = append(svcs, s.lbService(t, ns, fmt.Sprintf("svc-%04d", i), func(svc *corev1.Service) { svc.Annotations = annotations }))
	}
	s.eventually(t, "every Service's address seen on both sides", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, svc := range svcs {
			if infraAt[svc.UID].IsZero() || tenantAt[svc.UID].IsZero() {
				return false, nil
			}
		}
		return true, nil
	})
	created := time.Now()
	var lat []time.Duration
	mu.Lock()
	for _, svc := range svcs {
		lat = append(lat, tenantAt[svc.UID].Sub(infraAt[svc.UID]))
	}
	mu.Unlock()
	if os.Getenv("CCM_E2E_DEBUG") != "" {
		for _, svc := range svcs {
			t.Logf("DEBUG %s infra %s tenant %s", svc.Name, infraAt[svc.UID].Format("15:04:05.000"), tenantAt[svc.UID].Format("15:04:05.000"))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("infra address → tenant status, %d Services: min %s p50 %s p99 %s max %s; all addresses on the tenant %s after the first create",
		len(lat), lat[0].Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond),
		lat[len(lat)-1].Round(time.Millisecond), created.Sub(since).Round(time.Millisecond))

	for _, svc := range svcs {
		if err := s.tenant.Delete(s.ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	for _, svc := range svcs {
		s.deleteService(t, svc)
	}
	reportAPICalls(t, since, created, n)
}

// watchFirstIngress calls seen for every Service event in namespace that carries an address.
func watchFirstIngress(t *testing.T, ctx context.Context, cfg *rest.Config, namespace string, seen func(*corev1.Service)) {
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
func reportAPICalls(t *testing.T, since, created time.Time, n int) {
	t.Helper()
	for _, c := range []struct {
		cluster *harness.Cluster
		user    string
	}{{env.Management, infraUser}, {env.Tenant, tenantUser}} {
		if _, err := os.Stat(c.cluster.AuditLog()); err != nil {
			t.Logf("no audit log for %s (%v); API calls not counted", c.cluster.Name, err)
			return
		}
		events, err := c.cluster.AuditEvents(since, func(e harness.AuditEvent) bool {
			return harness.ByUser(c.user)(e) && e.ObjectRef != nil && e.ObjectRef.Resource != "leases"
		})
		if err != nil {
			t.Fatal(err)
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
