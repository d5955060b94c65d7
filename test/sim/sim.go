// Package sim starts the whole simulated management cluster in one call: KubeVirt
// (virt-controller, virt-handler, virt-api subresources through the aggregation layer, guest
// disks on loop devices), CDI with a LINSTOR-like provisioner, Cluster API + CAPK, and the real
// MetalLB controller — all against the harness's real apiservers. Component tests and the demo
// run on it. See README.md for what each part does and how faithfully.
package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/cdi"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
	"github.com/tenantcloud/tenantcloud/test/sim/hotplug"
	"github.com/tenantcloud/tenantcloud/test/sim/kubevirt"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
	"github.com/tenantcloud/tenantcloud/test/sim/virtapi"
)

// Options select how the simulated infrastructure behaves.
type Options struct {
	// PhaseDelay is the time each simulated phase takes (VMI start, hotplug steps, DataVolume
	// import, machine provisioning). Default 50 ms; real clusters take seconds.
	PhaseDelay time.Duration
	// ClusterName limits the Cluster API simulator to one tenant cluster; empty serves all.
	ClusterName string
	// ExternalCloudProvider makes tenant Nodes register with the uninitialized taint that only
	// a cloud controller manager lifts.
	ExternalCloudProvider bool
	// MetalLB starts the real MetalLB controller (about a second of start-up).
	MetalLB bool
	// Disks enables guest block devices on loop devices; needs root.
	Disks bool
	// Faults is shared by every part; nil gets a fresh Injector.
	Faults *fault.Injector
	// IPFamilies are the infra pod network's families, primary first (kubevirt.Options); nil
	// is dual-stack IPv4 first.
	IPFamilies []corev1.IPFamily
	// Kubelets, if set, runs real kubelets for the Cluster API workers it takes (see
	// capi.Options.Kubelets); the others get the simulated kubelet.
	Kubelets capi.Kubelets
	// FeatureGates are KubeVirt's enabled feature gates; nil means HotplugVolumes (the
	// subresource hot-plug). Sim.Gates changes them while the simulator runs.
	FeatureGates []string
}

// Sim is a running simulator. Stop it before the harness.
type Sim struct {
	Faults  *fault.Injector
	Gates   *featuregate.Gates  // KubeVirt's feature gates, shared by every part
	Disks   *disks.Manager      // nil unless Options.Disks
	VirtAPI *virtapi.Server     // subresources.kubevirt.io
	MetalLB *metallb.Controller // nil unless Options.MetalLB

	cancel context.CancelFunc
	done   chan error // receives the manager's exit; nil until the manager runs
}

// Start runs every simulated controller against env and returns once they are serving: the
// manager's caches synced, the virt-api APIService Available and, if asked, MetalLB ready.
func Start(ctx context.Context, env *harness.Env, opts Options) (s *Sim, err error) {
	if opts.PhaseDelay <= 0 {
		opts.PhaseDelay = 50 * time.Millisecond
	}
	if opts.Faults == nil {
		opts.Faults = fault.New()
	}
	if opts.FeatureGates == nil {
		opts.FeatureGates = []string{featuregate.HotplugVolumes}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s = &Sim{Faults: opts.Faults, Gates: featuregate.New(opts.FeatureGates...), cancel: cancel}
	defer func() {
		if err != nil {
			_ = s.Stop()
			s = nil
		}
	}()

	if opts.Disks {
		if err := disks.Supported(); err != nil {
			return s, fmt.Errorf("guest disks: %w", err)
		}
		if s.Disks, err = disks.New(filepath.Join(env.Dir, "devices")); err != nil {
			return s, err
		}
	}

	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
		return s, err
	}
	if err := kubevirt.Setup(ctx, mgr, kubevirt.Options{PhaseDelay: opts.PhaseDelay, Faults: opts.Faults, IPFamilies: opts.IPFamilies, Gates: s.Gates}); err != nil {
		return s, fmt.Errorf("kubevirt simulator: %w", err)
	}
	if err := hotplug.Setup(mgr, hotplug.Options{Disks: s.Disks, PhaseDelay: opts.PhaseDelay, Faults: opts.Faults}); err != nil {
		return s, fmt.Errorf("hotplug simulator: %w", err)
	}
	if err := cdi.Setup(ctx, mgr, cdi.Options{PhaseDelay: opts.PhaseDelay, ResizeDelay: opts.PhaseDelay, Faults: opts.Faults, Disks: s.Disks}); err != nil {
		return s, fmt.Errorf("cdi simulator: %w", err)
	}
	if err := capi.Setup(ctx, mgr, capi.Options{
		PhaseDelay: opts.PhaseDelay, Faults: opts.Faults, Tenant: env.Tenant.Client,
		ExternalCloudProvider: opts.ExternalCloudProvider, ClusterName: opts.ClusterName, Kubelets: opts.Kubelets,
	}); err != nil {
		return s, fmt.Errorf("cluster-api simulator: %w", err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- mgr.Start(runCtx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return s, errors.New("simulator caches did not sync")
	}

	if s.VirtAPI, err = virtapi.Start(runCtx, env.Management.Config, virtapi.Options{Faults: opts.Faults, Gates: s.Gates}); err != nil {
		return s, fmt.Errorf("virt-api simulator: %w", err)
	}
	if opts.MetalLB {
		logDir := filepath.Join(env.Dir, "metallb")
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return s, err
		}
		if s.MetalLB, err = metallb.Start(ctx, env.Management.Kubeconfig, env.Assets.BinDir, metallb.Options{LogDir: logDir}); err != nil {
			return s, err
		}
	}
	klog.InfoS("Simulator running", "phaseDelay", opts.PhaseDelay, "metallb", opts.MetalLB, "disks", opts.Disks)
	return s, nil
}

// DeviceDir is where the guest of VM namespace/vm sees its disks (the by-id directory a
// csi-node "inside" that VM scans). Empty without Options.Disks.
func (s *Sim) DeviceDir(namespace, vm string) string {
	if s.Disks == nil {
		return ""
	}
	return s.Disks.DeviceDir(namespace, vm)
}

// Stop stops MetalLB, virt-api and the controllers, then releases every loop device.
func (s *Sim) Stop() error {
	var errs []error
	if s.MetalLB != nil {
		errs = append(errs, s.MetalLB.Stop())
	}
	if s.VirtAPI != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs = append(errs, s.VirtAPI.Stop(ctx))
		cancel()
	}
	s.cancel()
	if s.done != nil {
		select {
		case err := <-s.done:
			errs = append(errs, err)
			s.done <- nil // a second Stop returns at once
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("simulator manager did not stop within 30s"))
		}
	}
	if s.Disks != nil {
		errs = append(errs, s.Disks.Close())
	}
	return errors.Join(errs...)
}
