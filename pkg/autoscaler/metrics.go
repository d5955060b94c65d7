package autoscaler

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics live in controller-runtime's registry, next to its cache and client metrics.
var (
	rpcTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantcloud_autoscaler_grpc_requests_total",
		Help: "CloudProvider gRPC calls by method and status code.",
	}, []string{"method", "code"})
	rpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tenantcloud_autoscaler_grpc_request_duration_seconds",
		Help: "CloudProvider gRPC call latency by method.",
		// Cache answers take microseconds; scaling calls wait for API writes.
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15},
	}, []string{"method"})
	registerMetrics sync.Once
)

func recordRPC(fullMethod string, code codes.Code, took time.Duration) {
	registerMetrics.Do(func() { metrics.Registry.MustRegister(rpcTotal, rpcDuration) })
	method := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	rpcTotal.WithLabelValues(method, code.String()).Inc()
	rpcDuration.WithLabelValues(method).Observe(took.Seconds())
}

// MetricsHandler serves controller-runtime's registry (this package's metrics included).
func MetricsHandler() http.Handler {
	registerMetrics.Do(func() { metrics.Registry.MustRegister(rpcTotal, rpcDuration) })
	return promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{})
}
