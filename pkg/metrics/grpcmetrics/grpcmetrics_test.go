package grpcmetrics

import (
	"context"
	"errors"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenantcloud/tenantcloud/pkg/metrics"
)

// sample is the value of the series name{labels…} in m's registry (0 when absent).
func sample(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if matches(s, labels) {
				return s.GetCounter().GetValue() + s.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func matches(s *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range s.GetLabel() {
		if v, ok := labels[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

func TestInterceptor(t *testing.T) {
	m := metrics.New("test")
	icpt := UnaryServerInterceptor(m)
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Controller/CreateVolume"}
	op := map[string]string{"operation": "CreateVolume"}
	var inFlight float64
	_, _ = icpt(context.Background(), nil, info, func(context.Context, any) (any, error) {
		inFlight = sample(t, m, "tenantcloud_operations_in_flight", op)
		return nil, status.Error(codes.NotFound, "no")
	})
	_, _ = icpt(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, errors.New("plain") })
	if inFlight != 1 {
		t.Errorf("in flight during the call = %v, want 1", inFlight)
	}
	if got := sample(t, m, "tenantcloud_operations_in_flight", op); got != 0 {
		t.Errorf("in flight after = %v", got)
	}
	for outcome, want := range map[string]float64{"NotFound": 1, "Unknown": 1, "OK": 0} {
		labels := map[string]string{"operation": "CreateVolume", "outcome": outcome}
		if got := sample(t, m, "tenantcloud_operations_total", labels); got != want {
			t.Errorf("CreateVolume %s = %v, want %v", outcome, got, want)
		}
	}
}
