// Command csi-node is the node half of the tenantcloud CSI driver. It runs as a DaemonSet
// inside the tenant cluster, finds hot-plugged disks by serial and mounts them; it holds no
// management-cluster credentials.
package main

import (
	"errors"
	"fmt"
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
	endpoint          string
	nodeID            string
	deviceDir         string
	maxVolumesPerNode int
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	return cli.Program{
		Component: config.CSINode,
		Description: "CSI node plugin inside a tenant cluster: stages and publishes volumes that " +
			"the csi-controller hot-plugged into this node's VM",
		AddFlags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI gRPC endpoint to serve")
			fs.StringVar(&o.nodeID, "node-id", "", "name of this tenant Node, usually the downward-API spec.nodeName")
			fs.StringVar(&o.deviceDir, "device-dir", "/dev/disk/by-id", "directory scanned for hot-plugged disks by serial")
			fs.IntVar(&o.maxVolumesPerNode, "max-volumes-per-node", 16, "volumes this node reports it can attach")
		},
		CheckFlags: func() error {
			switch {
			case o.endpoint == "":
				return errors.New("--endpoint must not be empty")
			case o.deviceDir == "":
				return errors.New("--device-dir must not be empty")
			case o.maxVolumesPerNode < 1:
				return fmt.Errorf("--max-volumes-per-node must be at least 1, got %d", o.maxVolumesPerNode)
			}
			return nil
		},
	}.Run(args, stdout, stderr)
}
