// Command autoscaler-provider serves cluster-autoscaler's externalgrpc CloudProvider API for
// one tenant, using the tenant's Cluster API MachineDeployments in the management cluster as
// node groups.
package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/config"
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
	listen                 string
	tlsCert, tlsKey, tlsCA string
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	return cli.Program{
		Component: config.Autoscaler,
		Description: "cluster-autoscaler externalgrpc provider for a tenant cluster: node groups are " +
			"the tenant's MachineDeployments in the management cluster",
		AddFlags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.listen, "listen", ":8086", "address the CloudProvider gRPC server listens on")
			fs.StringVar(&o.tlsCert, "tls-cert", "", "server certificate file (PEM); needs --tls-key")
			fs.StringVar(&o.tlsKey, "tls-key", "", "server private key file (PEM); needs --tls-cert")
			fs.StringVar(&o.tlsCA, "tls-ca", "", "CA bundle (PEM) that client certificates must chain to; needs --tls-cert")
		},
		CheckFlags: func() error {
			switch {
			case o.listen == "":
				return errors.New("--listen must not be empty")
			case (o.tlsCert == "") != (o.tlsKey == ""):
				return errors.New("--tls-cert and --tls-key must be given together")
			case o.tlsCA != "" && o.tlsCert == "":
				// Verifying clients only makes sense on a TLS server.
				return errors.New("--tls-ca needs --tls-cert and --tls-key")
			}
			return nil
		},
		Serve: func(ctx context.Context, cfg *config.Config, opts cli.Options) error {
			return autoscaler.Serve(ctx, cfg, autoscaler.ServeOptions{
				Listen:      o.listen,
				TLSCertFile: o.tlsCert,
				TLSKeyFile:  o.tlsKey,
				TLSCAFile:   o.tlsCA,
				Metrics:     opts.Metrics,
			})
		},
		// controller-runtime's registry holds the provider's gRPC metrics and the infra
		// cache's and client's own.
		Gatherers: []prometheus.Gatherer{ctrlmetrics.Registry},
	}.Run(args, stdout, stderr)
}
