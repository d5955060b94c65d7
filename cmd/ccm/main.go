// Command ccm is the tenantcloud cloud-controller-manager. It runs in the management cluster
// and gives the tenant cluster node lifecycle and LoadBalancer Services backed by KubeVirt VMs
// and MetalLB.
package main

import (
	"io"
	"os"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.Program{
		Component: config.CCM,
		Description: "cloud-controller-manager for a tenant cluster whose nodes are KubeVirt VMs: " +
			"node addresses and lifecycle, LoadBalancer Services via MetalLB in the management cluster",
		AddFlags:   flags.add,
		CheckFlags: flags.check,
		Serve:      serve,
	}.Run(args, stdout, stderr)
}
