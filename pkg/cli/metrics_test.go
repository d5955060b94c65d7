package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/metrics"
)

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestMetricsEndpoint runs a program and reads its metrics endpoint while it serves: the
// program's operations and the extra gatherers are on /metrics, pprof only with --profiling,
// and the endpoint is gone once the program has stopped.
func TestMetricsEndpoint(t *testing.T) {
	good := writeFile(t, validConfig)
	extra := prometheus.NewRegistry()
	extra.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "extra_registry_gauge", Help: "h"}))
	for _, profiling := range []bool{false, true} {
		t.Run(fmt.Sprintf("profiling=%v", profiling), func(t *testing.T) {
			var addr string
			p := Program{
				Component: config.CCM,
				Gatherers: []prometheus.Gatherer{extra},
				Serve: func(_ context.Context, _ *config.Config, o Options) error {
					addr = o.MetricsAddress
					o.Metrics.Begin("Probe")(metrics.OutcomeOK)
					code, body, err := get("http://" + addr + "/metrics")
					if err != nil || code != http.StatusOK {
						return fmt.Errorf("GET /metrics: %d %v", code, err)
					}
					for _, want := range []string{
						`tenantcloud_operations_total{component="ccm",operation="Probe",outcome="OK"} 1`,
						`tenantcloud_operations_in_flight{component="ccm",operation="Probe"} 0`,
						"extra_registry_gauge 0",
						"process_resident_memory_bytes",
					} {
						if !strings.Contains(body, want) {
							return fmt.Errorf("/metrics lacks %q:\n%s", want, body)
						}
					}
					code, _, err = get("http://" + addr + "/debug/pprof/")
					if err != nil {
						return err
					}
					want := http.StatusNotFound
					if profiling {
						want = http.StatusOK
					}
					if code != want {
						return fmt.Errorf("GET /debug/pprof/ = %d, want %d", code, want)
					}
					return nil
				},
			}
			args := []string{"--config", good, "--metrics-bind-address", "127.0.0.1:0"}
			if profiling {
				args = append(args, "--profiling")
			}
			var stdout, stderr bytes.Buffer
			if code := p.Run(args, &stdout, &stderr); code != ExitOK {
				t.Fatalf("exit %d: %s", code, &stderr)
			}
			if _, _, err := get("http://" + addr + "/metrics"); err == nil {
				t.Errorf("metrics endpoint %s still answers after the program stopped", addr)
			}
		})
	}
}
