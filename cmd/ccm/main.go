// Command ccm is the tenantcloud cloud-controller-manager. It runs in the management cluster
// and gives the tenant cluster node lifecycle and LoadBalancer Services backed by KubeVirt VMs
// and MetalLB.
package main

import (
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/metrics"
)

func main() {
	// The infra caches are controller-runtime's, which logs through a logger of its own;
	// without one its messages are dropped, and the first of them after 30 s prints a stack
	// trace about it. (Not in pkg/cli: csi-node must not link controller-runtime.)
	ctrllog.SetLogger(klog.NewKlogr())
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// gcPercent is the ccm's GOGC unless the environment sets one. Its live heap is small next to
// the runtime's default headroom (GOGC=100 lets the heap grow to twice the live data before a
// collection): ≈7 MB live at 100 Services, ≈11 MB at 1,000, against 17 and 39 MB of anonymous
// RSS (BenchmarkLBPropagation, issue 17). Half the headroom costs a collection twice as often,
// each over that small heap.
const gcPercent = 50

func run(args []string, stdout, stderr io.Writer) int {
	var flags ccmFlags
	return program(&flags).Run(args, stdout, stderr)
}

// program is the ccm as pkg/cli runs it; cli.Program applies GCPercent unless GOGC is set.
func program(flags *ccmFlags) cli.Program {
	return cli.Program{
		Component: config.CCM,
		Description: "cloud-controller-manager for a tenant cluster whose nodes are KubeVirt VMs: " +
			"node addresses and lifecycle, LoadBalancer Services via MetalLB in the management cluster",
		AddFlags:   flags.add,
		CheckFlags: flags.check,
		Serve:      flags.serve,
		// The upstream controllers' metrics (workqueues, node and service controllers, client
		// requests) live in component-base's registry, which also holds the runtime collectors
		// pkg/cli serves.
		Gatherers: []prometheus.Gatherer{metrics.Without(legacyregistry.DefaultGatherer, "go_", "process_")},
		GCPercent: gcPercent,
	}
}
