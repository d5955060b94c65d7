package ccm

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/test/scrape"
)

// metricsURL is the running ccm's /metrics, from its log (it binds port 0).
func (s *suite) metricsURL(t *testing.T) string {
	t.Helper()
	s.mu.Lock()
	p := s.ccm
	s.mu.Unlock()
	if p == nil {
		t.Fatal("no ccm running")
	}
	url, err := scrape.MetricsURL(p.Log(1 << 20))
	if err != nil {
		t.Fatalf("%s: %v", p.LogFile, err)
	}
	return url
}

// testMetricsAndEvents: an accepted and a refused Service move the ccm's operation counters
// by outcome and its infra request counter, and the tenant reads what happened from Events
// (the address assigned, the annotation refused).
func testMetricsAndEvents(t *testing.T, s *suite) {
	url := s.metricsURL(t)
	ensure := `operation="EnsureLoadBalancer"`
	before := scrape.Get(t, url)

	ns := s.namespace(t, "metrics")
	ok := s.lbService(t, ns, "ok", nil)
	refused := s.lbService(t, ns, "refused", func(svc *corev1.Service) {
		svc.Annotations = map[string]string{loadbalancer.AnnAddressPool: "foreign"}
	})
	ip := s.waitTenantIP(t, ok, nil)
	if msg := s.waitEvent(t, ok, loadbalancer.ReasonIPAssigned); !strings.Contains(msg, ip.String()) {
		t.Errorf("%s event %q does not name the address %s", loadbalancer.ReasonIPAssigned, msg, ip)
	}
	if msg := s.waitEvent(t, refused, loadbalancer.ReasonPoolNotAllowed); !strings.Contains(msg, `"foreign" is not granted`) {
		t.Errorf("%s event %q", loadbalancer.ReasonPoolNotAllowed, msg)
	}

	after := scrape.Get(t, url)
	for _, c := range []struct {
		metric string
		labels []string
	}{
		{"tenantcloud_operations_total", []string{ensure, `outcome="OK"`}},
		{"tenantcloud_operations_total", []string{ensure, `outcome="Refused"`}},
		{"tenantcloud_operation_duration_seconds_count", []string{ensure, `outcome="OK"`}},
		{"tenantcloud_infra_api_requests_total", []string{`method="POST"`, `resource="services"`, `code="201"`}},
	} {
		if d := after.Sum(c.metric, c.labels...) - before.Sum(c.metric, c.labels...); d < 1 {
			t.Errorf("%s%v moved by %v, want ≥ 1", c.metric, c.labels, d)
		}
	}
	if v, found := after[`tenantcloud_operations_in_flight{component="ccm",operation="EnsureLoadBalancer"}`]; !found || v < 0 {
		t.Errorf("in-flight gauge %v (present %v)", v, found)
	}
	// The framework's own registry is served too.
	if after.Sum("workqueue_adds_total") == 0 {
		t.Error("component-base metrics (workqueue_adds_total) not served")
	}
}
