package metallb

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// stopGrace is how long Stop waits after SIGTERM before SIGKILL. MetalLB's manager shuts down
// in well under a second most of the time, but was seen to hang in a reconcile begun at the
// signal: then it is killed, as the kubelet would after a pod's grace period.
const stopGrace = 10 * time.Second

// process is one child in its own process group.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, valid after done
}

// startProcess runs path with args and env, output appended to logFile. The child gets its own
// process group (so Stop reaches anything it spawns) and SIGKILL when the test binary dies
// without calling Stop (Pdeathsig), e.g. when `go test -timeout` kills it.
func startProcess(path, logFile string, args, env []string) (*process, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log %s: %w", logFile, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after stopGrace, and waits for the
// process to end. Needing SIGKILL is logged, not an error: the process is gone either way.
func (p *process) stop() error {
	if done, _ := p.exited(); done {
		return nil
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
		klog.InfoS("metallb-controller did not stop after SIGTERM; killed", "grace", stopGrace, "pid", -pgid)
		return nil
	}
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago. The
// listeners are held until all ports are picked so the same port is not returned twice.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the last max bytes of a file, for error messages.
func tail(path string, max int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if len(data) > max {
		data = data[len(data)-max:]
		if i := strings.IndexByte(string(data), '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return string(data)
}

// exitError describes why the child ended early, with its log.
func exitError(err error, logFile string) error {
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return fmt.Errorf("metallb-controller exited during start-up: %w; log %s:\n%s", err, logFile, tail(logFile, 4000))
}
