// Command sandbox runs tenantcloud end to end on one machine: the management and tenant
// control planes, the simulated infrastructure (KubeVirt, virt-api, CDI, MetalLB, Cluster API)
// and the four tenantcloud components as real processes with real config files, then walks
// through the user stories (LoadBalancer, PVC, autoscaling) with progress lines.
//
// The sandbox is a development tool built on the test harness (test/harness, test/sim); it is
// never shipped. Each component runs as its chart ServiceAccount, bound to exactly the roles
// deploy/charts render (bin/helm), as a real install would. Needs root (loop devices, mkfs,
// mount) and bin/ from `make bin build`; `make sandbox` does both.
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
	"github.com/tenantcloud/tenantcloud/test/sim"
)

const (
	infraNS     = "tenant-alpha"
	clusterName = "alpha"
	mdName      = "md-0"
	poolName    = "sandbox-public"
	poolCIDR    = "192.0.2.0/28"
	infraSC     = "sandbox-linstor"
	waitTimeout = 2 * time.Minute
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

	sb := &sandbox{logDir: logDir}
	failed := sb.stories(ctx)
	if ctx.Err() == nil && !failed {
		sb.printHints()
	}
	if ctx.Err() == nil && interactive {
		fmt.Println("Sandbox running. Press Ctrl-C to stop and clean up.")
		<-ctx.Done()
	}
	fmt.Println()
	step("cleaning up: processes, simulator (loop devices), control planes, temp dirs")
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
	logDir   string
	env      *harness.Env
	sim      *sim.Sim
	children []*harness.Process
	cfg      paths
	ca       *harness.Process
	provider string              // autoscaler-provider gRPC address
	worker   string              // first worker VM
	seen     map[string]bool     // Nodes already reported by waitNodes
	csiNodes map[string]*csiNode // by VM name
	creds    map[string]credentials
}

type paths struct {
	files    map[string]string // config file per component
	ctrlSock string
}

// spawn runs binary as a component of the sandbox, output to <logDir>/<name>.log; cleanup
// stops it.
func (s *sandbox) spawn(name, binary string, args ...string) (*harness.Process, error) {
	c, err := harness.StartBinary(name, binary, filepath.Join(s.logDir, name+".log"), args...)
	if err != nil {
		return nil, err
	}
	s.children = append(s.children, c)
	return c, nil
}

func (s *sandbox) cleanup() error {
	var errs []error
	for i := len(s.children) - 1; i >= 0; i-- {
		errs = append(errs, s.children[i].Stop())
	}
	errs = append(errs, unmountUnder(s.logDir))
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
		{"components", true, s.startComponents},
		{"tenant cluster", true, s.createTenantCluster},
		{"LoadBalancer story", false, s.storyLB},
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

func (s *sandbox) printHints() {
	fmt.Println()
	fmt.Println("Kubeconfigs (admin):")
	fmt.Printf("  management: %s\n", s.env.Management.Kubeconfig)
	fmt.Printf("  tenant:     %s\n", s.env.Tenant.Kubeconfig)
	fmt.Println("Try:")
	fmt.Printf("  kubectl --kubeconfig %s get nodes -o wide\n", s.env.Tenant.Kubeconfig)
	fmt.Printf("  kubectl --kubeconfig %s get svc,pods -A\n", s.env.Tenant.Kubeconfig)
	fmt.Printf("  kubectl --kubeconfig %s -n %s get machinedeployments,vm,vmi,dv,svc\n", s.env.Management.Kubeconfig, infraNS)
	fmt.Printf("Component logs: %s\n", s.logDir)
}
