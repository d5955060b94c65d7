package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Process is a binary the harness or a test started: a control-plane helper, or one of our
// programs run as it is deployed.
type Process struct {
	Name    string
	LogFile string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has ended
	err     error         // how it ended; set before done is closed
}

// stopGrace is how long Stop waits after SIGTERM; our programs drain their work queues and
// release leases on SIGTERM, which takes seconds on a loaded machine.
const stopGrace = 20 * time.Second

// StartBinary runs the binary at path with args, its output appended to logPath, in its own
// process group (so Stop and Kill reach any children) that is killed with the test process.
func StartBinary(name, path, logPath string, args ...string) (*Process, error) {
	return startBinary(name, path, logPath, true, nil, args)
}

// StartBinaryEnv is StartBinary with env as the child's whole environment, for a program
// whose behaviour the test's own variables would change.
func StartBinaryEnv(name, path, logPath string, env []string, args ...string) (*Process, error) {
	return startBinary(name, path, logPath, true, env, args)
}

func startBinary(name, path, logPath string, dieWithParent bool, env, args []string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: opening log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env // nil: the test's environment
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if dieWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogFile: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// startProcess runs bin/<binary> with args, output to <dir>/<name>.log. Its PID is recorded
// so a later run reaps it if this one is killed before Env.Stop.
func (e *Env) startProcess(name, binary string, args ...string) (*Process, error) {
	p, err := startBinary(name, filepath.Join(e.Assets.BinDir, binary), filepath.Join(e.Dir, name+".log"), false, nil, args)
	if err != nil {
		return nil, err
	}
	if err := recordChildren(e.Assets.BinDir); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process group, then SIGKILL after stopGrace (an error then).
func (p *Process) Stop() error { return p.StopWithin(stopGrace) }

// StopWithin is Stop with its own grace period before SIGKILL.
func (p *Process) StopWithin(grace time.Duration) error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not stop on SIGTERM within %s; killed", p.Name, grace)
	}
}

// Kill ends the process group with SIGKILL, as an OOM kill or a lost node would (nothing is
// released), and waits for it.
func (p *Process) Kill() {
	if exited, _ := p.Exited(); exited {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Pid is the process's ID (also its process group's).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Log returns the last n bytes of the process's log (the read error, if any).
func (p *Process) Log(n int) string {
	b, err := os.ReadFile(p.LogFile)
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b[max(0, len(b)-n):]))
}

// BuildPrograms builds the named cmd/ programs of this module into dir with extra go build
// flags (e.g. -race), so a test never runs a stale bin/ binary. They are built static and
// -trimpath, as make build and make images build them, so tests run (and the benchmarks weigh)
// the binaries the images ship: a cgo build is linked dynamically, and its RSS counts ld.so's
// and libc's pages too. -race needs cgo, so a -race build keeps it.
func BuildPrograms(ctx context.Context, dir string, flags []string, names ...string) error {
	pkgs := make([]string, len(names))
	for i, n := range names {
		pkgs[i] = "github.com/tenantcloud/tenantcloud/cmd/" + n
	}
	var env []string
	if !slices.Contains(flags, "-race") {
		env = []string{"CGO_ENABLED=0"}
		flags = append([]string{"-trimpath"}, flags...)
	}
	return GoBuild(ctx, dir+string(filepath.Separator), env, flags, pkgs...)
}

// GoBuild runs go build of pkgs with flags, output to out (a file for one package, a
// directory ending in a separator for several), with env added to the test's environment
// (CGO_ENABLED=0, say). It is the one way tests and the harness build Go programs.
func GoBuild(ctx context.Context, out string, env, flags []string, pkgs ...string) error {
	args := append(append([]string{"build", "-o", out}, flags...), pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, output)
	}
	return nil
}

// StartScheduler runs the real kube-scheduler against the tenant cluster, so pods there become
// Pending/Unschedulable or bound exactly as on a real cluster. It is stopped by Env.Stop.
func (e *Env) StartScheduler(ctx context.Context) (*Process, error) {
	return e.StartSchedulerFor(ctx, e.Tenant)
}

// StartSchedulerFor runs the real kube-scheduler against c: the tenant's, or the management
// cluster's for pods on a real management node (test/harness/node). One per cluster; it is
// stopped by Env.Stop.
func (e *Env) StartSchedulerFor(ctx context.Context, c *Cluster) (*Process, error) {
	if _, running := e.schedulers[c.Name]; running {
		return nil, fmt.Errorf("kube-scheduler already running for %s", c.Name)
	}
	p, err := e.startProcess(c.Name+"-kube-scheduler", "kube-scheduler",
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
	)
	if err != nil {
		return nil, err
	}
	if e.schedulers == nil {
		e.schedulers = map[string]*Process{}
	}
	e.schedulers[c.Name] = p
	return p, ctx.Err()
}

// StartControllerManager runs the real kube-controller-manager against c with only the named
// controllers (e.g. "garbagecollector", "endpointslice", "namespace"). envtest runs none, so
// without it owner references never cascade and Services get no EndpointSlices. Controllers
// that would fight the simulator (the PV binder, node lifecycle) are left to the tests'
// choice. It is stopped by Env.Stop.
func (e *Env) StartControllerManager(ctx context.Context, c *Cluster, controllers ...string) (*Process, error) {
	if len(controllers) == 0 {
		return nil, errors.New("name the controllers to run")
	}
	if _, running := e.controllers[c.Name]; running {
		return nil, fmt.Errorf("kube-controller-manager already running for %s", c.Name)
	}
	p, err := e.startProcess(c.Name+"-kube-controller-manager", "kube-controller-manager",
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--controllers="+strings.Join(controllers, ","),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
	)
	if err != nil {
		return nil, err
	}
	if e.controllers == nil {
		e.controllers = map[string]*Process{}
	}
	e.controllers[c.Name] = p
	return p, ctx.Err()
}
