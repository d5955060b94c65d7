package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
)

// An infra apiserver outage is a kube-apiserver that goes away and comes back at the same
// address while etcd keeps its data: a control-plane node rebooting, a static pod restarting.
// Clients must then reconnect without new credentials, so StartAPIServer reuses everything the
// first start made: the port, the serving and client CAs (kubeconfigs and AddUser identities
// stay valid), the flags, the audit log (appended to) and the etcd behind it.
//
// envtest's own APIServer.Stop cannot serve: it deletes the certificate directory it created,
// and a later Start would mint new CAs that no existing kubeconfig trusts. So the process is
// stopped here by signal and started again through envtest's Start, which finds the port and
// certificates already set and keeps them.

// apiServerStopTimeout bounds a graceful stop before the process is killed. kube-apiserver
// stops listening at once on SIGTERM but then waits for open HTTP/2 streams (every client's
// watches) to end, which takes the full shutdown timeout on a busy cluster; the outage has
// begun by then, so waiting longer only delays the restart.
const apiServerStopTimeout = 10 * time.Second

// StopAPIServer stops the cluster's kube-apiserver with SIGTERM (SIGKILL after 10 s) and
// returns once the process is gone. etcd keeps running; StartAPIServer brings the apiserver
// back on the same endpoint.
func (c *Cluster) StopAPIServer(ctx context.Context) error {
	return c.stopAPIServer(ctx, syscall.SIGTERM)
}

// KillAPIServer is StopAPIServer with SIGKILL: no graceful shutdown, in-flight requests cut.
func (c *Cluster) KillAPIServer(ctx context.Context) error {
	return c.stopAPIServer(ctx, syscall.SIGKILL)
}

func (c *Cluster) stopAPIServer(ctx context.Context, sig syscall.Signal) error {
	pid, err := c.apiServerPID()
	if err != nil {
		return err
	}
	api := c.env.ControlPlane.GetAPIServer()
	// The first start's certificate directory was a temporary one envtest would remove on Stop;
	// after a restart envtest treats it as given and keeps it, so Env.Stop removes it.
	if c.certDir == "" {
		c.certDir = api.CertDir
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("%s: signalling kube-apiserver %d: %w", c.Name, pid, err)
	}
	gone := func(context.Context) (bool, error) { return !c.isAPIServer(pid), nil }
	stopCtx, cancel := context.WithTimeout(ctx, apiServerStopTimeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(stopCtx, 20*time.Millisecond, true, gone); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: waiting for kube-apiserver %d to stop: %w", c.Name, pid, ctx.Err())
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, gone); err != nil {
			return fmt.Errorf("%s: kube-apiserver %d survived SIGKILL: %w", c.Name, pid, err)
		}
		klog.InfoS("kube-apiserver did not exit on SIGTERM; killed", "cluster", c.Name, "pid", pid, "timeout", apiServerStopTimeout)
	}
	c.apiServerDown = true
	klog.InfoS("kube-apiserver stopped", "cluster", c.Name, "pid", pid, "signal", sig, "host", c.Config.Host)
	return nil
}

// StartAPIServer starts the kube-apiserver StopAPIServer stopped, with the same flags, port,
// certificates and etcd, and returns once it answers /healthz.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if !c.apiServerDown {
		return fmt.Errorf("%s: kube-apiserver is running", c.Name)
	}
	api := c.env.ControlPlane.GetAPIServer()
	started := make(chan error, 1)
	go func() { started <- api.Start() }()
	select {
	case err := <-started:
		if err != nil {
			return fmt.Errorf("%s: restarting kube-apiserver (log: %s): %w", c.Name, c.LogFile(), err)
		}
	case <-ctx.Done():
		return fmt.Errorf("%s: restarting kube-apiserver: %w", c.Name, ctx.Err())
	}
	c.apiServerDown = false
	if err := recordChildren(filepath.Dir(api.Path)); err != nil {
		klog.ErrorS(err, "Cannot record the restarted kube-apiserver; a killed test may leave it running", "cluster", c.Name)
	}
	klog.InfoS("kube-apiserver started again", "cluster", c.Name, "host", c.Config.Host)
	return nil
}

// apiServerPID finds the cluster's kube-apiserver among this process's children by its
// secure port, which no other apiserver of the harness shares.
func (c *Cluster) apiServerPID() (int, error) {
	if c.env == nil || c.Config == nil {
		return 0, fmt.Errorf("%s: not started", c.Name)
	}
	for _, pid := range childPIDs(os.Getpid()) {
		if c.isAPIServer(pid) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("%s: no running kube-apiserver with --secure-port=%s", c.Name, c.env.ControlPlane.GetAPIServer().SecureServing.Port)
}

// isAPIServer reports whether pid runs this cluster's kube-apiserver. A reaped PID, or one
// reused by another program, does not.
func (c *Cluster) isAPIServer(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || isZombie(stat) {
		return false
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	api := c.env.ControlPlane.GetAPIServer()
	if len(args) == 0 || args[0] != api.Path {
		return false
	}
	want := "--secure-port=" + api.SecureServing.Port
	for _, a := range args[1:] {
		if a == want {
			return true
		}
	}
	return false
}

// isZombie reads the state field of /proc/<pid>/stat: an exited process not yet reaped by
// envtest's waiting goroutine no longer serves.
func isZombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// removeRestartDirs removes what a restarted apiserver's envtest no longer removes itself.
func (c *Cluster) removeRestartDirs() error {
	if c.certDir == "" {
		return nil
	}
	if err := os.RemoveAll(c.certDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: removing %s: %w", c.Name, c.certDir, err)
	}
	return nil
}
