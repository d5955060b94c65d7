package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// child is one component the sandbox runs as a real process, in its own process group so
// stopping it reaches anything it started.
type child struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan error
}

// startChild runs binary with args, output to <logDir>/<name>.log.
func startChild(logDir, name, binary string, args ...string) (*child, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: creating log: %w", name, err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig: a sandbox killed with SIGKILL still takes its children with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, log: logPath, cmd: cmd, done: make(chan error, 1)}
	go func() {
		c.done <- cmd.Wait()
		_ = f.Close()
	}()
	return c, nil
}

// exited reports whether the process has ended, with its log tail if so.
func (c *child) exited() error {
	select {
	case err := <-c.done:
		c.done <- err
		return fmt.Errorf("%s exited (%v); log %s:\n%s", c.name, err, c.log, tail(c.log, 20))
	default:
		return nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 10 s.
func (c *child) stop() error {
	select {
	case err := <-c.done:
		c.done <- err
		return nil
	default:
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.done <- err
		return nil
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		err := <-c.done
		c.done <- err
		return fmt.Errorf("%s did not stop on SIGTERM within 10s; killed", c.name)
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// unmountUnder lazily unmounts whatever is still mounted below dir (a PVC story interrupted
// between NodeStage and NodeUnstage), deepest first, so loop devices can be released.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := syscall.Unmount(points[i], syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", points[i], err))
		}
	}
	return errors.Join(errs...)
}
