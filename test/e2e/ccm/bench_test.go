package ccm

import (
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// The ccm's API requests per Service during the burst, from both apiservers' audit logs, go in
// the row too (mgmt-*, tenant-*; leader-election renewals left out). Goal: p99 ≤ 300 ms and
// no LIST (a list-* column would show one).
func BenchmarkLBPropagation(b *testing.B) {
	s := startSuite(b, 0)
	// envtest's service range is a /24 in both clusters; more ClusterIPs come from an extra
	// ServiceCIDR (networking.k8s.io/v1, GA since Kubernetes 1.33).
	for _, c := range []client.Client{s.mgmt, s.tenant} {
		s.create(b, c, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
			Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.1.0.0/20"}}})
	}
	bulk := map[string]string{loadbalancer.AnnAddressPool: "bulk"}
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := s.namespace(b, "bench")
			burst := s.propagate(b, ns, n, bulk)
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
			reportBurstCalls(b, burst, n)
			s.deleteServices(b, burst.services)
		})
	}
}

// reportBurstCalls adds the ccm's requests per Service in the burst, by cluster, verb and
// resource.
func reportBurstCalls(b *testing.B, burst burst, n int) {
	for _, c := range []struct {
		prefix  string
		cluster *harness.Cluster
		user    string
	}{{"mgmt-", env.Management, infraUser}, {"tenant-", env.Tenant, tenantUser}} {
		events, err := c.cluster.AuditEvents(burst.since, func(e harness.AuditEvent) bool {
			return harness.ByUser(c.user)(e) && e.ObjectRef != nil && e.ObjectRef.Resource != "leases" &&
				e.StageTimestamp.Before(burst.done)
		})
		if err != nil {
			b.Fatal(err)
		}
		stats.ReportCalls(b, c.prefix, harness.CountByKey(events), float64(n), "svc")
	}
}
