// Package simmgr builds the controller-runtime managers the simulator's controllers run in. The
// simulator plays cluster-wide controllers (virt-controller, CDI, Cluster API), so unlike the
// product's scoped infra cache it watches every namespace.
package simmgr

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tenantcloud/tenantcloud/pkg/reconnect"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// New returns a manager for cfg with no metrics or health endpoints, no leader election, and
// controller names allowed to repeat (several simulators may run in one test binary).
func New(cfg *rest.Config) (manager.Manager, error) {
	scheme, err := harness.Scheme()
	if err != nil {
		return nil, err
	}
	// The simulated controllers reconnect the moment the apiserver is back (the real KubeVirt,
	// CDI and Cluster API controllers wait out client-go's backoff, 15–60 s after a minute's
	// outage): the outage tests then measure tenantcloud's recovery, not the simulators'.
	cfg, _, err = reconnect.Config(cfg, "simulated")
	if err != nil {
		return nil, err
	}
	skip := true
	// The classic rate-limited workqueue, not controller-runtime's priority queue (its default
	// since v0.23): v0.24.1's priority queue can deadlock on shutdown (kubernetes-sigs/
	// controller-runtime#3538, fixed upstream by #3540, not in a release this module resolves).
	// Its dispatcher hands a ready item to a waiting worker with a blocking send while holding
	// the queue's locks; a worker that saw the shutdown instead leaves nobody to receive it, and
	// every worker still reconciling then blocks for good in Done. Seen as BenchmarkScaleUp100's
	// simulator missing its 10 s grace period: every controller logged "All workers finished"
	// except sim-kubevirt-vm, whose reconciles were failing and requeueing at the moment of the
	// stop. The simulators gain nothing from priorities.
	priorityQueue := false
	gracefulShutdown := 10 * time.Second
	mgr, err := manager.New(cfg, manager.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          false,
		GracefulShutdownTimeout: &gracefulShutdown,
		Controller:              config.Controller{SkipNameValidation: &skip, UsePriorityQueue: &priorityQueue},
	})
	if err != nil {
		return nil, fmt.Errorf("building simulator manager for %s: %w", cfg.Host, err)
	}
	return mgr, nil
}

// StuckGoroutines returns the stacks of the goroutines in simulator or controller-runtime code,
// for a test to print when a manager did not stop within its grace period: the manager's own
// error names no runnable.
func StuckGoroutines() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "controller-runtime") || strings.Contains(g, "tenantcloud/test/sim") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
