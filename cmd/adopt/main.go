// Command adopt takes over, in place, what kubevirt/cloud-provider-kubevirt and
// kubevirt/csi-driver created for one tenant, so that the tenant switches to tenantcloud
// keeping its load balancer addresses and its volumes (pkg/adopt; the procedure, the checks
// and the rollback are in docs/migration.md). It is run by an operator, once per tenant,
// between stopping the upstream components and starting tenantcloud's. Without --apply it only
// lists what it would claim and refuse, and why.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/adopt"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/pkg/kubeconfig"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("adopt", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfgPath, csiLabels string
		apply, rollback    bool
	)
	fs.StringVar(&cfgPath, "config", "", "the tenant's tenantcloud config file (clusterName, infraNamespace, infraKubeconfig, tenantKubeconfig, loadBalancer); required")
	fs.StringVar(&csiLabels, "upstream-csi-labels", "", "the upstream CSI controller's --infra-cluster-labels (e.g. csi-driver/cluster=tenant-a); empty = do not adopt volumes")
	fs.BoolVar(&apply, "apply", false, "mark the proven objects (default: dry run, nothing changes)")
	fs.BoolVar(&rollback, "rollback", false, "release the objects adopted for this tenant back to the upstream components (with --apply; stop tenantcloud's ccm and csi-controller first)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "adopt: take over the load balancers and volumes the upstream KubeVirt CCM and CSI driver created for one tenant (docs/migration.md)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	sel, err := labels.ConvertSelectorToLabelsMap(csiLabels)
	if err != nil {
		fmt.Fprintf(stderr, "adopt: --upstream-csi-labels: %v\n", err)
		return 2
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "adopt: %v\n", err)
		return 1
	}
	mode := adopt.DryRun
	switch {
	case rollback && apply:
		mode = adopt.RollbackMode
	case rollback:
		mode = adopt.RollbackDryRun
	case apply:
		mode = adopt.ApplyMode
	}
	opts := adopt.Options{
		Scope:        infra.Scope{Namespace: cfg.InfraNamespace, ClusterName: cfg.ClusterName},
		LoadBalancer: cfg.LoadBalancer,
		CSILabels:    sel,
	}
	infraClient, err := newClient(cfg.InfraKubeconfig, "infra")
	if err != nil {
		fmt.Fprintf(stderr, "adopt: %v\n", err)
		return 1
	}
	tenantClient, err := newClient(cfg.TenantKubeconfig, "tenant")
	if err != nil {
		fmt.Fprintf(stderr, "adopt: %v\n", err)
		return 1
	}
	if _, err := adopt.Run(ctx, infraClient, tenantClient, opts, mode, stdout); err != nil {
		fmt.Fprintf(stderr, "adopt: %v\n", err)
		return 1
	}
	return 0
}

// newClient is a live (uncached) client for the cluster of the kubeconfig at path.
func newClient(path, which string) (client.Client, error) {
	cfg, err := kubeconfig.RESTConfig(path)
	if err != nil {
		return nil, fmt.Errorf("%s API credentials: %w", which, err)
	}
	cfg.UserAgent = version.String("adopt")
	scheme, err := infra.NewScheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("%s API client: %w", which, err)
	}
	return c, nil
}
