package autoscaler

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/pkg/metrics"
	"github.com/tenantcloud/tenantcloud/pkg/metrics/grpcmetrics"
	"github.com/tenantcloud/tenantcloud/pkg/reconnect"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

// ServeOptions are the command-line settings of the autoscaler-provider program.
type ServeOptions struct {
	// Listen is the gRPC address, e.g. ":8086".
	Listen string
	// TLSCertFile and TLSKeyFile enable TLS; TLSCAFile additionally requires client
	// certificates signed by that CA.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// Metrics records every gRPC call and every infra API request; may be nil. The program
	// (pkg/cli) serves it, together with controller-runtime's registry, which holds this
	// package's own gRPC metrics.
	Metrics *metrics.Metrics
	// ShutdownGrace bounds how long in-flight calls may finish after ctx ends. Default 10s.
	ShutdownGrace time.Duration
}

// Serve runs the provider for the tenant in cfg until ctx ends. It returns nil on a clean
// shutdown.
func Serve(ctx context.Context, cfg *config.Config, opts ServeOptions) error {
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	infraCfg, err := restConfig(cfg.InfraKubeconfig, "infra")
	if err != nil {
		return err
	}
	infraCfg.Wrap(opts.Metrics.WrapInfraTransport)
	tenantCfg, err := restConfig(cfg.TenantKubeconfig, "tenant")
	if err != nil {
		return err
	}
	if infraCfg, tenantCfg, err = Reconnecting(infraCfg, tenantCfg); err != nil {
		return err
	}
	scope := infra.Scope{Namespace: cfg.InfraNamespace, ClusterName: cfg.ClusterName}
	ic, err := infra.NewWithOptions(infraCfg, scope, InfraOptions())
	if err != nil {
		return err
	}
	nodes, err := NewNodeCache(tenantCfg)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, err := New(ctx, Config{Infra: ic, Nodes: nodes, NodeGroupSelector: cfg.Autoscaling.NodeGroupSelector})
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	mode := "plaintext"
	if opts.TLSCertFile != "" {
		if tlsCfg, err = ServerTLS(opts.TLSCertFile, opts.TLSKeyFile, opts.TLSCAFile); err != nil {
			return err
		}
		mode = "tls"
		if opts.TLSCAFile != "" {
			mode = "mutual-tls"
		}
	}
	lis, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("listening for gRPC on %s: %w", opts.Listen, err)
	}
	srv := NewServer(p, tlsCfg, grpcmetrics.ServerOption(opts.Metrics))
	errs := make(chan error, 1)
	go func() {
		if err := srv.GRPC.Serve(lis); err != nil {
			errs <- fmt.Errorf("serving gRPC: %w", err)
		}
	}()
	klog.InfoS("Serving CloudProvider gRPC", "address", lis.Addr().String(), "transport", mode)

	if err := p.Start(ctx); err != nil {
		srv.Stop(0)
		if ctx.Err() != nil {
			return nil // asked to stop while syncing
		}
		return err
	}
	srv.SetReady()
	klog.InfoS("Autoscaler provider ready", "namespace", scope.Namespace, "cluster", scope.ClusterName)

	select {
	case <-ctx.Done():
		klog.InfoS("Shutting down", "grace", opts.ShutdownGrace)
		srv.Stop(opts.ShutdownGrace)
		return nil
	case err := <-errs:
		srv.Stop(opts.ShutdownGrace)
		return err
	}
}

// restConfig loads a kubeconfig file; an empty path means in-cluster credentials.
func restConfig(path, which string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		if path == "" {
			return nil, fmt.Errorf("%s credentials: no kubeconfig given and not running in a cluster: %w", which, err)
		}
		return nil, fmt.Errorf("loading %s kubeconfig %s: %w", which, path, err)
	}
	// The default 5 QPS would pace a DeleteNodes of a dozen Machines over seconds.
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "tenantcloud-autoscaler-provider/" + version.Version
	return cfg, nil
}

// Reconnecting gives the infra and the tenant clients a reconnect.Gate each, so that the
// caches catch up within seconds of either apiserver answering again after an outage.
func Reconnecting(infraCfg, tenantCfg *rest.Config) (*rest.Config, *rest.Config, error) {
	infraCfg, _, err := reconnect.Config(infraCfg, "infra")
	if err != nil {
		return nil, nil, err
	}
	tenantCfg, _, err = reconnect.Config(tenantCfg, "tenant")
	if err != nil {
		return nil, nil, err
	}
	return infraCfg, tenantCfg, nil
}
