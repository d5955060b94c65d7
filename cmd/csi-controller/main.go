// Command csi-controller is the controller half of the tenantcloud CSI driver. It runs in the
// management cluster and backs tenant volumes with DataVolumes that it hot-plugs into the
// tenant's VMs.
package main

import (
	"errors"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the flags only this program has.
type options struct {
	endpoint string
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	return cli.Program{
		Component: config.CSIController,
		Description: "CSI controller for a tenant cluster: creates, deletes, resizes and snapshots " +
			"volumes as management-cluster DataVolumes and hot-plugs them into the tenant's VMs",
		AddFlags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI gRPC endpoint to serve")
		},
		CheckFlags: func() error {
			if o.endpoint == "" {
				return errors.New("--endpoint must not be empty")
			}
			return nil
		},
	}.Run(args, stdout, stderr)
}
