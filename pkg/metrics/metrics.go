// Package metrics is the Prometheus instrumentation every tenantcloud program shares: operation
// counts and latency by outcome, operations in flight, and requests to the management (infra)
// apiserver by outcome. The same names in every component let one dashboard cover all of them;
// the component label tells them apart.
//
// A Metrics owns its registry (no process-global state), so a program — or a test running a
// program twice — builds one per run. Every method is safe on a nil *Metrics and does nothing,
// so packages can be used without metrics (unit tests, embedded uses).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Outcomes of an operation that is not a gRPC call (gRPC calls use their status code).
const (
	OutcomeOK      = "OK"
	OutcomeError   = "Error"
	OutcomeRefused = "Refused" // the request was outside what the tenant may ask for
)

// Metrics is one program's instrumentation.
type Metrics struct {
	registry      *prometheus.Registry
	operations    *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	inFlight      *prometheus.GaugeVec
	infraRequests *prometheus.CounterVec
	infraErrors   *prometheus.CounterVec
}

// New builds the metrics of component (e.g. "csi-controller") in a fresh registry that also
// holds the Go runtime and process collectors.
func New(component string) *Metrics {
	constLabels := prometheus.Labels{"component": component}
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "tenantcloud_operations_total",
			Help:        "Operations (gRPC calls, load-balancer syncs) by operation and outcome.",
			ConstLabels: constLabels,
		}, []string{"operation", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "tenantcloud_operation_duration_seconds",
			Help:        "Operation latency by operation and outcome.",
			ConstLabels: constLabels,
			// Cache answers take microseconds; hotplugs and DataVolume creation wait for the
			// infra cluster for seconds.
			Buckets: []float64{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"operation", "outcome"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        "tenantcloud_operations_in_flight",
			Help:        "Operations started and not finished, by operation.",
			ConstLabels: constLabels,
		}, []string{"operation"}),
		infraRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "tenantcloud_infra_api_requests_total",
			Help:        "Requests to the management-cluster apiserver by HTTP method, resource and status code.",
			ConstLabels: constLabels,
		}, []string{"method", "resource", "code"}),
		infraErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "tenantcloud_infra_api_errors_total",
			Help:        "Failed requests to the management-cluster apiserver (HTTP status ≥ 400 or no answer) by method, resource and code.",
			ConstLabels: constLabels,
		}, []string{"method", "resource", "code"}),
	}
	m.registry.MustRegister(m.operations, m.duration, m.inFlight, m.infraRequests, m.infraErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the program registers further collectors of its own.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.registry
}

// Begin counts operation op as in flight and returns the function that ends it with outcome.
func (m *Metrics) Begin(op string) (end func(outcome string)) {
	if m == nil {
		return func(string) {}
	}
	start := time.Now()
	g := m.inFlight.WithLabelValues(op)
	g.Inc()
	return func(outcome string) {
		g.Dec()
		m.operations.WithLabelValues(op, outcome).Inc()
		m.duration.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
	}
}

// MethodName is the last element of a full gRPC method name ("/csi.v1.Controller/CreateVolume"
// → "CreateVolume"): method names are unique enough within one program and short in queries.
func MethodName(fullMethod string) string {
	for i := len(fullMethod) - 1; i >= 0; i-- {
		if fullMethod[i] == '/' {
			return fullMethod[i+1:]
		}
	}
	return fullMethod
}
