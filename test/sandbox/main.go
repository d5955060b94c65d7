// Command sandbox runs tenantcloud as deployed, on one machine: the management and tenant
// control planes, the simulated infrastructure (KubeVirt, virt-api, CDI, MetalLB, Cluster
// API), and both charts installed with helm from the images make images built (pushed to a
// loopback registry): the management chart's pods on a real management node, the tenant
// chart's csi-node on real kubelet nodes for the tenant's worker VMs. It then
// walks through the user stories — a LoadBalancer, a PVC a pod writes to and that follows the
// pod to another node, autoscaling, a refused request — only through Kubernetes objects as a
// user makes them, printing each outcome with the time it took. Left running (no --once) it is
// a small cloud to try with kubectl; Ctrl-C removes everything.
//
// The sandbox is tooling built on the test harness (test/harness, test/harness/node,
// test/sim); it is never shipped. Needs root (namespaces, loop devices, mkfs, mount) and bin/
// from `make bin images`; `make sandbox` does all of it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/install"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
	"github.com/tenantcloud/tenantcloud/test/sim"
)

const (
	infraNS     = "tenant-alpha"
	clusterName = "alpha"
	mdName      = "md-0"
	// poolName is the pool deploy/examples/management-values.yaml grants; the sandbox gives it
	// poolCIDR.
	poolName = "tenant-public"
	poolCIDR = "192.0.2.0/28"
	// otherPool exists in the management cluster but is not granted to the tenant.
	otherPool = "other-tenants"
	otherCIDR = "198.51.100.0/28"
	// storageClass is the tenant StorageClass deploy/examples/tenant-values.yaml gives the
	// tenant chart.
	storageClass = "tenantcloud"
	// mgmtNode is the real management node the management chart's pods run on.
	mgmtNode = "mgmt-1"
	// maxWorkers is the MachineDeployment's autoscaling maximum; realNodes how many workers
	// get a real kubelet node at a time. A real node (kubelet, containerd, kube-proxy, csi-node
	// and workload pods) was measured here at ≈120 MiB of cgroup memory (230-260 MiB summed
	// RSS) and 0.01-0.1 of a core once settled, 0.2-0.25 while starting; three leave room for
	// the other users of a 2-core machine. The fourth worker, if a user's Deployment asks for
	// it, is simulated.
	maxWorkers  = 4
	realNodes   = 3
	waitTimeout = 4 * time.Minute
)

var (
	start          = time.Now()
	phaseDelayFlag = 200 * time.Millisecond
)

func progress(mark, format string, args ...any) {
	fmt.Printf("[%6.1fs] %s %s\n", time.Since(start).Seconds(), mark, fmt.Sprintf(format, args...))
}

func step(format string, args ...any) { progress("…", format, args...) }
func ok(format string, args ...any)   { progress("✓", format, args...) }
func fail(format string, args ...any) { progress("✗", format, args...) }
func note(format string, args ...any) { progress("·", format, args...) }

// since is the time from t, rounded for the story lines.
func since(t time.Time) string { return time.Since(t).Round(100 * time.Millisecond).String() }

// poll waits for cond with a deadline; the error names what did not happen.
func poll(ctx context.Context, what string, cond func(ctx context.Context) (bool, error)) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		done, err := cond(ctx)
		if err != nil {
			last = err
		}
		return done, nil
	})
	if err != nil {
		if last != nil {
			return fmt.Errorf("%s did not happen within %s (last error: %v)", what, waitTimeout, last)
		}
		return fmt.Errorf("%s did not happen within %s", what, waitTimeout)
	}
	return nil
}

func main() { os.Exit(run()) }

func run() int {
	once := flag.Bool("once", false, "exit after the stories instead of waiting for Ctrl-C")
	flag.DurationVar(&phaseDelayFlag, "phase-delay", phaseDelayFlag, "time each simulated infrastructure phase takes")
	keep := flag.Bool("keep", false, "keep the work directory (logs, kubeconfigs, configs) after exit")
	flag.Parse()
	interactive := !*once && os.Getenv("CI") != "true" && isTerminal(os.Stdin)

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	// Component logs go to files; the harness and simulator log through klog into one too.
	logDir, err := os.MkdirTemp("", "tenantcloud-sandbox-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logFile, err := os.Create(filepath.Join(logDir, "sandbox.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	klog.LogToStderr(false)
	klog.SetOutput(logFile)
	ctrllog.SetLogger(klog.NewKlogr())

	sb := &sandbox{logDir: logDir, seen: map[string]bool{}}
	sb.workers = newWorkers(sb, realNodes)
	failed := sb.stories(ctx)
	if ctx.Err() == nil && !failed {
		sb.printHints()
	}
	if ctx.Err() == nil && interactive {
		fmt.Println("Sandbox running. Press Ctrl-C to stop and clean up.")
		<-ctx.Done()
	}
	fmt.Println()
	if sb.env != nil && (*keep || failed) {
		// The nodes' directories (kubelet, containerd and every chart pod's log) are under it.
		sb.env.KeepDir = true
	}
	step("cleaning up: helm uninstall, nodes (containers, namespaces, cgroups, mounts), registry, simulator (loop devices), control planes, temp dirs")
	if err := sb.cleanup(); err != nil {
		fail("cleanup: %v", err)
		failed = true
	} else {
		ok("cleaned up")
	}
	klog.Flush()
	_ = logFile.Close()
	if *keep || failed {
		fmt.Printf("Logs kept in %s\n", logDir)
		if sb.env != nil {
			fmt.Printf("Control planes' and nodes' logs (pods' under nodes/<node>/pod-logs) kept in %s\n", sb.env.Dir)
		}
	} else {
		_ = os.RemoveAll(logDir)
	}
	if failed || (ctx.Err() != nil && !interactive) {
		return 1
	}
	return 0
}

// exited reports a component that has ended, with the tail of its log.
func exited(p *harness.Process) error {
	if done, err := p.Exited(); done {
		return fmt.Errorf("%s exited (%v); log %s:\n%s", p.Name, err, p.LogFile, p.Log(2000))
	}
	return nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// sandbox is everything started, in start order; cleanup undoes it in reverse.
type sandbox struct {
	logDir     string
	env        *harness.Env
	sim        *sim.Sim
	images     *install.Images // bin/images pushed to a loopback registry
	nodeImages string          // the harness images archive every real node imports
	mgmt       *node.Node      // the management node the management chart's pods run on
	workers    *workers
	release    *install.Release
	// clusterCreated is when the tenant's Cluster API objects were created.
	clusterCreated time.Time
	seen           map[string]bool // what was already reported
}

func (s *sandbox) cleanup() error {
	var errs []error
	if s.release != nil {
		// helm uninstall of both charts, as an operator removes them; what stays is removed
		// with the nodes and clusters below.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		errs = append(errs, s.release.Uninstall(ctx))
		cancel()
	}
	// Nodes before the simulator: their mounts hold the loop devices it releases.
	errs = append(errs, s.workers.stop())
	if s.mgmt != nil {
		errs = append(errs, s.mgmt.Stop())
	}
	if s.images != nil {
		errs = append(errs, s.images.Stop())
	}
	if s.sim != nil {
		errs = append(errs, s.sim.Stop())
	}
	if s.env != nil {
		errs = append(errs, s.env.Stop())
	}
	return errors.Join(errs...)
}

// stories runs the storyline; it reports whether any story failed. A failure before the
// stories (control planes, simulator, components) ends the run.
func (s *sandbox) stories(ctx context.Context) (failed bool) {
	for _, st := range []struct {
		name  string
		fatal bool
		run   func(context.Context) error
	}{
		{"control planes", true, s.startControlPlanes},
		{"simulator", true, s.startSimulator},
		{"registry", true, s.startRegistry},
		{"tenant cluster and management node", true, s.createTenantCluster},
		{"charts", true, s.installCharts},
		{"LoadBalancer story", false, s.storyLB},
		{"refused request story", false, s.storyRefusedPool},
		{"PVC story", false, s.storyStorage},
		{"scale story", false, s.storyScale},
		{"least privilege", false, s.storyRefusals},
	} {
		if ctx.Err() != nil {
			return true
		}
		if err := st.run(ctx); err != nil {
			if ctx.Err() != nil {
				fail("%s: interrupted", st.name)
				return true
			}
			fail("%s failed: %v", st.name, err)
			failed = true
			if st.fatal {
				return true
			}
		}
	}
	return failed
}
