// Command csi-controller is the controller half of the tenantcloud CSI driver. It runs in the
// management cluster and backs tenant volumes with DataVolumes that it hot-plugs into the
// tenant's VMs.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/pkg/kubeconfig"
	"github.com/tenantcloud/tenantcloud/pkg/metrics/grpcmetrics"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

func main() {
	// The infra caches are controller-runtime's, which logs through a logger of its own;
	// without one its messages are dropped, and the first of them after 30 s prints a stack
	// trace about it. (Not in pkg/cli: csi-node must not link controller-runtime.)
	ctrllog.SetLogger(klog.NewKlogr())
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the flags only this program has.
type options struct {
	endpoint       string
	legacyEndpoint string
	qps            float32
	burst          int
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	return cli.Program{
		Component: config.CSIController,
		Description: "CSI controller for a tenant cluster: creates, deletes, resizes and snapshots " +
			"volumes as management-cluster DataVolumes and hot-plugs them into the tenant's VMs",
		AddFlags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI gRPC endpoint to serve")
			fs.StringVar(&o.legacyEndpoint, "legacy-endpoint", "", "also serve the controller under the upstream KubeVirt CSI driver's name ("+tccsi.LegacyDriverName+") on this endpoint, for a second set of CSI sidecars that serves the PVs adopted from it (docs/migration.md); empty = off")
			fs.Float32Var(&o.qps, "infra-api-qps", 50, "queries per second to the management apiserver")
			fs.IntVar(&o.burst, "infra-api-burst", 100, "burst of queries to the management apiserver")
		},
		CheckFlags: func() error {
			if o.endpoint == "" {
				return errors.New("--endpoint must not be empty")
			}
			if o.qps <= 0 || o.burst <= 0 {
				return fmt.Errorf("--infra-api-qps and --infra-api-burst must be positive, got %v and %d", o.qps, o.burst)
			}
			if _, err := tccsi.UnixSocketPath(o.endpoint); err != nil {
				return err
			}
			if o.legacyEndpoint == "" {
				return nil
			}
			if o.legacyEndpoint == o.endpoint {
				return errors.New("--legacy-endpoint must differ from --endpoint")
			}
			_, err := tccsi.UnixSocketPath(o.legacyEndpoint)
			return err
		},
		Serve: o.serve,
		// controller-runtime's registry: the infra cache's and client's own metrics.
		Gatherers: []prometheus.Gatherer{ctrlmetrics.Registry},
		// Idle, the heap is the informer cache (≈12 MB live with 1,000 volumes) and the
		// runtime keeps about twice the live heap at GOGC=100: at 50 the resident anonymous
		// memory with 1,000 volumes was 24 MB instead of 32 (BenchmarkIdleVolumes). It runs
		// one per tenant, so that is multiplied; the extra collections only cost while busy.
		GCPercent: 50,
	}.Run(args, stdout, stderr)
}

// serve starts the controller against the management cluster and serves Identity and
// Controller on the endpoint until ctx ends.
func (o *options) serve(ctx context.Context, cfg *config.Config, opts cli.Options) error {
	restCfg, err := infraRESTConfig(cfg.InfraKubeconfig)
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = o.qps, o.burst
	restCfg.Wrap(opts.Metrics.WrapInfraTransport)
	srv, err := controller.New(controller.Options{
		Scope:   infra.Scope{Namespace: cfg.InfraNamespace, ClusterName: cfg.ClusterName},
		Storage: cfg.Storage,
		Infra:   restCfg,
	})
	if err != nil {
		return err
	}
	klog.InfoS("Starting CSI controller", "namespace", cfg.InfraNamespace, "cluster", cfg.ClusterName,
		"defaultStorageClass", cfg.Storage.DefaultStorageClass, "hotplug", cfg.Storage.Hotplug)
	if err := srv.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	if o.legacyEndpoint == "" {
		return tccsi.Serve(ctx, o.endpoint, srv.Register, grpcmetrics.ServerOption(opts.Metrics))
	}
	// Both names serve one Server; when either endpoint fails, both stop.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 2)
	go func() { served <- tccsi.Serve(ctx, o.endpoint, srv.Register, grpcmetrics.ServerOption(opts.Metrics)) }()
	go func() {
		served <- tccsi.Serve(ctx, o.legacyEndpoint, srv.RegisterLegacy, grpcmetrics.ServerOption(opts.Metrics))
	}()
	first := <-served
	cancel()
	return errors.Join(first, <-served)
}

func infraRESTConfig(path string) (*rest.Config, error) {
	cfg, err := kubeconfig.RESTConfig(path)
	if err != nil {
		return nil, fmt.Errorf("infra API credentials: %w", err)
	}
	cfg.UserAgent = version.String("csi-controller")
	return cfg, nil
}
