package kubevirt

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// Fault points the simulator consults (see package fault). Stalling a VMI point holds the VMI
// in the phase before it; FailNext makes the VMI go Failed there instead.
const (
	// FaultVMStart is passed before virt-controller creates a VM's VMI. Stall: no VMI is
	// created. FailNext: the create fails, the VM gets a Failure condition and is retried.
	FaultVMStart = "vm/start"
	// FaultVMIScheduled is passed when the virt-launcher pod would start (Scheduling → Scheduled).
	FaultVMIScheduled = "vmi/Scheduled"
	// FaultVMIRunning is passed when the domain would boot (Scheduled → Running).
	FaultVMIRunning = "vmi/Running"
	// FaultVMISucceeded is passed when a stopping VMI's guest would finish shutting down.
	// FailNext makes the shutdown unclean: the VMI ends Failed instead of Succeeded.
	FaultVMISucceeded = "vmi/Succeeded"
)

// Options configures the simulated virt-controller and virt-handler.
type Options struct {
	// PhaseDelay is how long each VMI phase lasts before the next (scheduling, launcher start,
	// boot, shutdown). Zero moves as fast as the API server allows.
	PhaseDelay time.Duration
	// Faults, if set, is consulted at the Fault* points.
	Faults *fault.Injector
	// Gates are KubeVirt's feature gates, read on every sync; nil is HotplugVolumes on. With
	// DeclarativeHotplugVolumes alone the VM controller hot-plugs template changes into the
	// running VMI (declarative.go).
	Gates *featuregate.Gates
	// Nodes are the infra (management cluster) Nodes VMIs are scheduled onto. Default: three
	// nodes infra-a/b/c in zones zone-a/b/c of region region-1.
	Nodes []InfraNode
	// IPv4Prefix and IPv6Prefix are the pod network the VMIs' addresses come from. Defaults:
	// 10.244.0.0/16 and fd10:244::/64.
	IPv4Prefix, IPv6Prefix string
	// IPFamilies are the pod network's families, primary first, as the infra cluster's pod
	// CIDRs are configured: every running VMI (its launcher pod's IPs and its pod-network
	// interface) gets one address of each, in this order. Default [IPv4, IPv6]; [IPv6, IPv4]
	// is an IPv6-primary network, one entry a single-stack one.
	IPFamilies []corev1.IPFamily
	// StartFailureBackoff is the base of KubeVirt's crash-loop backoff after a VMI fails before
	// ever running: the restart waits base × failures² plus up to half of that again, capped at
	// 30 × base. KubeVirt's base is 10s (max 300s), the default here too.
	StartFailureBackoff time.Duration
}

// InfraNode is one management-cluster Node the simulator creates as a virtualization host.
type InfraNode struct {
	Name, Zone, Region string
	// Labels are added to the well-known hostname/zone/region/schedulable labels.
	Labels map[string]string
	// Capacity defaults to 32 CPUs, 128Gi memory, 110 pods and KubeVirt's kvm device.
	Capacity corev1.ResourceList
}

// DefaultNodes is the infra layout used when Options.Nodes is empty.
func DefaultNodes() []InfraNode {
	return []InfraNode{
		{Name: "infra-a", Zone: "zone-a", Region: "region-1"},
		{Name: "infra-b", Zone: "zone-b", Region: "region-1"},
		{Name: "infra-c", Zone: "zone-c", Region: "region-1"},
	}
}

func (o Options) withDefaults() Options {
	if len(o.Nodes) == 0 {
		o.Nodes = DefaultNodes()
	}
	if o.IPv4Prefix == "" {
		o.IPv4Prefix = "10.244.0.0/16"
	}
	if o.IPv6Prefix == "" {
		o.IPv6Prefix = "fd10:244::/64"
	}
	if o.StartFailureBackoff <= 0 {
		o.StartFailureBackoff = 10 * time.Second
	}
	return o
}

// poll is how often a reconciler looks again at something it cannot watch (a stalled fault
// point). It follows PhaseDelay so a slow simulation stays cheap.
func (o Options) poll() time.Duration { return max(o.PhaseDelay, 50*time.Millisecond) }

// Setup creates the infra Nodes and registers the VM and VMI controllers with mgr. Call it
// once per management cluster, before mgr.Start.
func Setup(ctx context.Context, mgr manager.Manager, opts Options) error {
	opts = opts.withDefaults()
	alloc, err := newAllocator(opts.IPv4Prefix, opts.IPv6Prefix, opts.IPFamilies)
	if err != nil {
		return fmt.Errorf("kubevirt sim: %w", err)
	}
	// The manager's cache is not running yet: read through the API reader, write directly.
	reader, c := mgr.GetAPIReader(), mgr.GetClient()
	for i, n := range opts.Nodes {
		// Host addresses only need to be distinct; launcher pods report them as hostIP.
		if err := ensureInfraNode(ctx, c, reader, n, fmt.Sprintf("192.168.100.%d", 10+i)); err != nil {
			return fmt.Errorf("kubevirt sim: %w", err)
		}
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return renewInfraLeases(ctx, c, reader, opts.Nodes)
	})); err != nil {
		return fmt.Errorf("kubevirt sim: registering infra node Leases: %w", err)
	}
	place := newPlacement()
	if err := seed(ctx, reader, alloc, place); err != nil {
		return fmt.Errorf("kubevirt sim: %w", err)
	}
	vm := &vmReconciler{client: c, reader: reader, opts: opts}
	if err := vm.setupWithManager(mgr); err != nil {
		return fmt.Errorf("kubevirt sim: registering VM controller: %w", err)
	}
	vmi := &vmiReconciler{client: c, reader: reader, opts: opts, alloc: alloc, place: place, clock: simmgr.NewStepClock()}
	if err := vmi.setupWithManager(mgr); err != nil {
		return fmt.Errorf("kubevirt sim: registering VMI controller: %w", err)
	}
	return nil
}

// seed teaches the allocator and scheduler about VMIs that already exist (left by an earlier
// simulator against the same cluster), so addresses stay unique across restarts.
func seed(ctx context.Context, reader client.Reader, alloc *allocator, place *placement) error {
	var vmis kubevirtv1.VirtualMachineInstanceList
	if err := reader.List(ctx, &vmis); err != nil {
		return fmt.Errorf("listing existing VMIs: %w", err)
	}
	for i := range vmis.Items {
		vmi := &vmis.Items[i]
		if vmi.IsFinal() {
			continue
		}
		if vmi.Status.NodeName != "" {
			place.set(types.NamespacedName{Namespace: vmi.Namespace, Name: vmi.Name}, vmi.Status.NodeName)
		}
	}
	// Addresses live on launcher pods from Scheduled on; the pod names its VMI by UID.
	var pods corev1.PodList
	if err := reader.List(ctx, &pods, client.MatchingLabels{kubevirtv1.AppLabel: launcherAppValue}); err != nil {
		return fmt.Errorf("listing existing virt-launcher pods: %w", err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		owner := pod.Labels[kubevirtv1.CreatedByLabel]
		if owner == "" || podFinal(pod) {
			continue
		}
		var addrs []netip.Addr
		for _, ip := range pod.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				addrs = append(addrs, a)
			}
		}
		alloc.Reserve(owner, addrs)
	}
	return nil
}
