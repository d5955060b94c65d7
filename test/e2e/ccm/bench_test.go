package ccm

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// BenchmarkLBPropagation measures how long a LoadBalancer address takes from MetalLB (the infra
// Service's status) to the tenant Service's status, through the real ccm binary and the real
// MetalLB, with 100 and 1,000 Services:
//   - burst-*: the n Services created at once (n samples; the tail is queueing in the ccm's
//     workers and client rate limits);
//   - one-*: one iteration is one more Service created, propagated and deleted while the n
//     stand (b.N samples).
//
// *-e2e-* is from the tenant's create call returning to the address on the tenant Service: the
// upstream service controller, the ccm's infra create, MetalLB's allocation and the status
// propagation together.
//
// The ccm's API requests per Service during the burst and per minute while the n Services stand
// idle (idle-*), from both apiservers' audit logs, go in the row too (mgmt-*, tenant-*;
// leader-election renewals left out), and the ccm's RSS with n Services. Goal: p99 ≤ 300 ms
// and no LIST (a list-* column would show one); idle: no requests at all.
func BenchmarkLBPropagation(b *testing.B) {
	// A long lease: the ccm exits when it cannot renew, and on a loaded 2-core box with 1,000
	// Services the apiserver has been seen to take over 10 s (the production renew deadline)
	// to answer. One replica runs, so nothing waits on the lease.
	s := startSuite(b, 0, "--leader-elect-lease-duration=120s", "--leader-elect-renew-deadline=100s",
		"--leader-elect-retry-period=10s")
	// envtest's service range is a /24 in both clusters; more ClusterIPs come from an extra
	// ServiceCIDR (networking.k8s.io/v1, GA since Kubernetes 1.33).
	for _, c := range []client.Client{s.mgmt, s.tenant} {
		s.create(b, c, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
			Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.1.0.0/20"}}})
	}
	bulk := map[string]string{loadbalancer.AnnAddressPool: "bulk"}
	// The lease is held before the load-balancer workers run (they wait for the caches and a
	// sweep for orphans first): one Service carried through warms them, so the burst measures
	// a running ccm rather than its start.
	warm := s.namespace(b, "bench-warm")
	s.deleteServices(b, s.propagate(b, warm, 1, bulk).services)
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := s.namespace(b, "bench")
			burst := s.propagate(b, ns, n, bulk)
			// Events trail the statuses: each recorder writes them one at a time, and the upstream
			// service controller's three per Service (Ensuring, Ensured, and UnAvailable: the
			// bench tenant has no Nodes) share its client's 50 QPS with its patches. The idle
			// window starts once they are all in, or once waiting longer says they never will be.
			ev := s.waitServiceEvents(b, ns, burst.services)
			// Idle with the n Services standing: an observation window, not a wait for anything.
			idleSince := time.Now()
			<-time.After(idleWindow)
			idleUntil := time.Now()

			one := s.namespace(b, "bench-one")
			var oneLat, oneE2E stats.Latencies
			for b.Loop() {
				p := s.propagate(b, one, 1, bulk)
				oneLat.Add(p.latencies[0])
				oneE2E.Add(p.endToEnd[0])
				b.StopTimer()
				s.deleteServices(b, p.services)
				b.StartTimer()
			}
			// Reported after the loop: b.Loop's start deletes metrics reported before it.
			oneLat.Report(b, "one")
			oneE2E.Report(b, "one-e2e")
			var burstLat, burstE2E stats.Latencies
			for i := range burst.latencies {
				burstLat.Add(burst.latencies[i])
				burstE2E.Add(burst.endToEnd[i])
			}
			burstLat.Report(b, "burst")
			burstE2E.Report(b, "burst-e2e")
			b.ReportMetric(float64(burst.done.Sub(burst.since).Milliseconds()), "burst-all-ms")
			b.ReportMetric(float64(ev.ipAssigned.Sub(burst.done).Milliseconds()), "events-lag-ms")
			b.ReportMetric(float64(ev.all.Sub(burst.done).Milliseconds()), "upstream-events-lag-ms")
			b.ReportMetric(ev.ipAssignedPct, "ipassigned-events-%")
			reportCalls(b, "", burst.since, burst.done, float64(n), "svc", true)
			reportCalls(b, "idle-", idleSince, idleUntil, idleUntil.Sub(idleSince).Minutes(), "min", false)
			s.mu.Lock()
			pid := s.ccm.Pid()
			s.mu.Unlock()
			stats.ReportRSS(b, "ccm", pid)
			s.deleteServices(b, burst.services)
		})
	}
}

// eventsWait bounds how long BenchmarkLBPropagation waits for the burst's Events.
const eventsWait = 2 * time.Minute

// burstEvents says when a burst's Events were in.
type burstEvents struct {
	// ipAssigned is when the last IPAssigned Event (ours, written once the address is on the
	// tenant) arrived; all is when the upstream service controller's EnsuredLoadBalancer had
	// too, for every Service.
	ipAssigned, all time.Time
	// ipAssignedPct is the share of Services whose IPAssigned Event arrived: client-go's event
	// broadcaster queues at most 1,000 events and drops the rest, so a large burst may never
	// see them all.
	ipAssignedPct float64
}

// waitServiceEvents waits, up to eventsWait, until every Service in svcs has its IPAssigned
// and EnsuredLoadBalancer Events.
func (s *suite) waitServiceEvents(b *testing.B, ns string, svcs []*corev1.Service) burstEvents {
	b.Helper()
	var out burstEvents
	assigned, ensured := 0, 0
	// Listing thousands of Events: poll gently.
	err := wait.PollUntilContextTimeout(s.ctx, 500*time.Millisecond, eventsWait, true, func(ctx context.Context) (bool, error) {
		if err := s.ccmExited(); err != nil {
			return false, err
		}
		var events corev1.EventList
		if err := s.tenant.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, nil // retried; the deadline ends it
		}
		byReason := map[string]map[types.UID]bool{loadbalancer.ReasonIPAssigned: {}, "EnsuredLoadBalancer": {}}
		for _, e := range events.Items {
			if seen, ok := byReason[e.Reason]; ok {
				seen[e.InvolvedObject.UID] = true
			}
		}
		now := time.Now()
		if n := len(byReason[loadbalancer.ReasonIPAssigned]); n > assigned {
			assigned, out.ipAssigned = n, now
		}
		if n := len(byReason["EnsuredLoadBalancer"]); n > ensured || out.all.IsZero() {
			ensured, out.all = n, now
		}
		return assigned == len(svcs) && ensured == len(svcs), nil
	})
	if err != nil && s.ccmExited() != nil {
		b.Fatal(err)
	}
	if out.all.Before(out.ipAssigned) {
		out.all = out.ipAssigned
	}
	out.ipAssignedPct = 100 * float64(assigned) / float64(len(svcs))
	return out
}

// idleWindow is how long BenchmarkLBPropagation watches the ccm's requests with the Services
// standing and nothing changing.
const idleWindow = 20 * time.Second

// reportCalls adds the ccm's requests between since and until, by cluster (mgmt-, tenant-),
// verb and resource, divided by per. Lease requests are left out: leader election renews at
// the suite's short retry period, a setting, not load. wrote says the ccm wrote to both
// clusters in the window, so finding no request there fails the benchmark.
func reportCalls(b *testing.B, prefix string, since, until time.Time, per float64, unit string, wrote bool) {
	for _, c := range []struct {
		prefix  string
		cluster *harness.Cluster
		user    string
	}{{"mgmt-", env.Management, infraUser}, {"tenant-", env.Tenant, tenantUser}} {
		events, err := c.cluster.AuditEvents(since, func(e harness.AuditEvent) bool {
			return harness.ByUser(c.user)(e) && e.ObjectRef != nil && e.ObjectRef.Resource != "leases" &&
				e.StageTimestamp.Before(until)
		})
		if err != nil {
			b.Fatal(err)
		}
		if wrote && len(events) == 0 {
			// The ccm wrote to both clusters in this window; none audited means the log or the
			// filter is wrong, and the idle window's zero (its goal) would prove nothing.
			b.Fatalf("%s: no audited request by %s between %s and %s", c.cluster.Name, c.user,
				since.Format(time.RFC3339Nano), until.Format(time.RFC3339Nano))
		}
		stats.ReportCalls(b, prefix+c.prefix, harness.CountByKey(events), per, unit)
		b.ReportMetric(float64(len(events))/per, prefix+c.prefix+"calls/"+unit)
	}
}
