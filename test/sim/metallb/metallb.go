package metallb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// Binary is the file name of the MetalLB controller in the harness bin directory.
const Binary = "metallb-controller"

// DefaultNamespace is where MetalLB's manifests install it; IPAddressPools must live in the
// controller's namespace.
const DefaultNamespace = "metallb-system"

// configStateGVK is MetalLB's own status object; the controller creates
// ConfigurationState "controller" once its caches have synced and its reconcilers run, which
// is the best "ready" signal it offers (its health endpoint answers before caches sync).
var configStateGVK = schema.GroupVersionKind{Group: "metallb.io", Version: "v1beta1", Kind: "ConfigurationState"}

// Options tune Start. The zero value is usable.
type Options struct {
	// Namespace for the controller, its Pod object and the IPAddressPools it reads
	// (DefaultNamespace if empty). Created if missing.
	Namespace string
	// PodName is the name of the controller's Pod object (default "metallb-controller").
	PodName string
	// LogLevel is MetalLB's --log-level: all, debug, info (default), warn, error, none.
	LogLevel string
	// LogDir receives metallb-controller.log. Empty: a temporary directory that Stop removes
	// (copy LogFile first if a failed test needs it).
	LogDir string
	// StartTimeout bounds the wait for the controller to report ready (default 60s).
	StartTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.PodName == "" {
		o.PodName = "metallb-controller"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
}

// Controller is a running metallb-controller process.
type Controller struct {
	namespace  string
	logFile    string
	removeDir  string // temporary log directory owned by this Controller, if any
	proc       *harness.Process
	startup    time.Duration
	healthPort int
	stopOnce   sync.Once
	stopErr    error
}

// Namespace is where the controller reads IPAddressPools.
func (c *Controller) Namespace() string { return c.namespace }

// LogFile is the controller's combined stdout/stderr.
func (c *Controller) LogFile() string { return c.logFile }

// StartupLatency is how long Start took from exec to the controller reporting ready.
func (c *Controller) StartupLatency() time.Duration { return c.startup }

// Start runs binDir/metallb-controller against the cluster of kubeconfig and waits until it
// is ready. On any error nothing is left running.
func Start(ctx context.Context, kubeconfig, binDir string, opts Options) (*Controller, error) {
	opts.defaults()
	bin := filepath.Join(binDir, Binary)
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("%s is missing or not executable (run make bin): %v", bin, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	cl, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("building client for %s: %w", cfg.Host, err)
	}
	if err := ensurePrerequisites(ctx, cl, opts.Namespace, opts.PodName); err != nil {
		return nil, err
	}

	c := &Controller{namespace: opts.Namespace}
	logDir := opts.LogDir
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "metallb-controller-"); err != nil {
			return nil, fmt.Errorf("creating log directory: %w", err)
		}
		c.removeDir = logDir
	}
	c.logFile = filepath.Join(logDir, "metallb-controller.log")

	// The ports are free now; another process could take one before MetalLB binds it, in
	// which case the controller exits and Start reports its log.
	ports, err := freePorts(2)
	if err != nil {
		c.cleanup()
		return nil, err
	}
	c.healthPort = ports[1]
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--namespace=" + opts.Namespace,
		"--pod-name=" + opts.PodName,
		"--log-level=" + opts.LogLevel,
		// No ValidatingWebhookConfiguration points at us and nothing could reach us; with
		// webhooks off the controller also skips certificate rotation entirely.
		"--webhook-mode=disabled",
		"--disable-cert-rotation",
		"--port=" + strconv.Itoa(ports[0]),
		"--health-probe-port=" + strconv.Itoa(ports[1]),
	}
	start := time.Now()
	c.proc, err = harness.StartBinaryEnv("metallb-controller", bin, c.logFile, childEnv(), args...)
	if err != nil {
		c.cleanup()
		return nil, err
	}
	if err := c.waitReady(ctx, cl, opts.StartTimeout); err != nil {
		stopErr := c.Stop()
		return nil, errors.Join(err, stopErr)
	}
	c.startup = time.Since(start)
	klog.InfoS("MetalLB controller ready", "namespace", opts.Namespace, "startup", c.startup.Round(time.Millisecond),
		"log", c.logFile, "args", strings.Join(args[1:], " "))
	return c, nil
}

// childEnv is the test's environment without variables that would change MetalLB's behaviour
// behind the caller's back (METALLB_* override flags; KUBECONFIG is passed as a flag).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "METALLB_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitReady polls the health endpoint and then the ConfigurationState the controller writes
// once its reconcilers run, failing fast if the process exits.
func (c *Controller) waitReady(ctx context.Context, cl client.Client, timeout time.Duration) error {
	healthz := fmt.Sprintf("http://127.0.0.1:%d/readyz", c.healthPort)
	httpc := &http.Client{Timeout: 2 * time.Second}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if done, err := c.proc.Exited(); done {
			return false, exitError(err, c.logFile)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, healthz, nil)
		if err != nil {
			return false, err
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return false, nil // not listening yet
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, nil
		}
		state := &unstructured.Unstructured{}
		state.SetGroupVersionKind(configStateGVK)
		err = cl.Get(ctx, client.ObjectKey{Namespace: c.namespace, Name: "controller"}, state)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		var exit bool
		if exit, _ = c.proc.Exited(); !exit {
			err = fmt.Errorf("waiting for metallb-controller to become ready: %w; log %s:\n%s", err, c.logFile, tail(c.logFile, 4000))
		}
		return err
	}
	return nil
}

// Stop terminates the controller (SIGTERM, then SIGKILL) and removes a temporary log
// directory. It is safe to call more than once (later calls return the first result) and on
// a Controller whose Start failed.
func (c *Controller) Stop() error {
	c.stopOnce.Do(func() {
		if c.proc != nil {
			// A controller that died on its own before Stop is a failure the caller should
			// see: Services stopped getting addresses from then on.
			if done, werr := c.proc.Exited(); done {
				c.stopErr = fmt.Errorf("metallb-controller had already exited (%v); log %s:\n%s", werr, c.logFile, tail(c.logFile, 2000))
			}
			// Needing SIGKILL is logged, not an error: the process is gone either way.
			if err := c.proc.StopWithin(stopGrace); err != nil {
				klog.InfoS("metallb-controller killed", "reason", err, "pid", c.proc.Pid())
			}
		}
		c.cleanup()
	})
	return c.stopErr
}

func (c *Controller) cleanup() {
	if c.removeDir != "" {
		_ = os.RemoveAll(c.removeDir)
		c.removeDir = ""
	}
}
