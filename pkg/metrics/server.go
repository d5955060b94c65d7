package metrics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/klog/v2"
)

// HandlerOptions choose what the metrics endpoint serves besides this program's own metrics.
type HandlerOptions struct {
	// Profiling serves net/http/pprof under /debug/pprof/. Off by default: profiles reveal
	// internals and a CPU profile costs CPU while it runs.
	Profiling bool
	// Gatherers are further registries served on /metrics, e.g. controller-runtime's (client
	// and cache metrics) or component-base's (the cloud-controller-manager framework's).
	Gatherers []prometheus.Gatherer
}

// Handler serves /metrics and, if asked, /debug/pprof/.
func (m *Metrics) Handler(opts HandlerOptions) http.Handler {
	gatherers := prometheus.Gatherers{}
	if m != nil {
		gatherers = append(gatherers, m.registry)
	}
	gatherers = append(gatherers, opts.Gatherers...)
	mux := http.NewServeMux()
	// ContinueOnError: one registry failing to collect must not hide the others.
	mux.Handle("/metrics", promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	if opts.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Serve listens on addr and serves h until ctx ends. It returns once listening, with the bound
// address (addr may use port 0) and a channel that receives the serving error, if any, and is
// closed when the server has stopped.
func Serve(ctx context.Context, addr string, h http.Handler) (string, <-chan error, error) {
	return serve(ctx, "metrics", addr, h, nil)
}

// ServeTLS is Serve over TLS with cfg (its certificates), for an endpoint named what in errors
// and the log ("Serving <what>"; only the metrics endpoint logs "Serving metrics", the line
// tests find it by).
func ServeTLS(ctx context.Context, what, addr string, h http.Handler, cfg *tls.Config) (string, <-chan error, error) {
	return serve(ctx, what, addr, h, cfg)
}

func serve(ctx context.Context, what, addr string, h http.Handler, tlsCfg *tls.Config) (string, <-chan error, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listening for %s on %s: %w", what, addr, err)
	}
	if tlsCfg != nil {
		lis = tls.NewListener(lis, tlsCfg)
	}
	// WriteTimeout is left unset: a pprof CPU profile or trace streams for as long as asked.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("serving %s: %w", what, err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	bound := lis.Addr().String()
	klog.InfoS("Serving "+what, "address", bound)
	return bound, errs, nil
}

// Without serves g's metric families except those whose names start with one of prefixes. It
// lets a program serve another registry that also holds the Go runtime and process collectors
// (component-base's does) without serving those series twice.
func Without(g prometheus.Gatherer, prefixes ...string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		kept := mfs[:0]
		for _, mf := range mfs {
			if !hasAnyPrefix(mf.GetName(), prefixes) {
				kept = append(kept, mf)
			}
		}
		return kept, err
	})
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
