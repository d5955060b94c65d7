package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is a harness-started binary other than the control plane itself.
type Process struct {
	Name    string
	LogFile string
	cmd     *exec.Cmd
	done    chan error
}

// startProcess runs bin/<binary> with args, output to <dir>/<name>.log, in its own process
// group so Stop reaches any children.
func (e *Env) startProcess(name, binary string, args ...string) (*Process, error) {
	logPath := filepath.Join(e.Dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: creating log: %w", name, err)
	}
	cmd := exec.Command(filepath.Join(e.Assets.BinDir, binary), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogFile: logPath, cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		_ = logFile.Close()
	}()
	if err := recordChildren(e.Assets.BinDir); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after 10 s.
func (p *Process) Stop() error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop on SIGTERM within 10s; killed", p.Name)
	}
}

// StartScheduler runs the real kube-scheduler against the tenant cluster, so pods there become
// Pending/Unschedulable or bound exactly as on a real cluster. It is stopped by Env.Stop.
func (e *Env) StartScheduler(ctx context.Context) (*Process, error) {
	if e.scheduler != nil {
		return nil, errors.New("kube-scheduler already running")
	}
	p, err := e.startProcess("tenant-kube-scheduler", "kube-scheduler",
		"--kubeconfig="+e.Tenant.Kubeconfig,
		"--authentication-kubeconfig="+e.Tenant.Kubeconfig,
		"--authorization-kubeconfig="+e.Tenant.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
	)
	if err != nil {
		return nil, err
	}
	e.scheduler = p
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
