// Package hotplug plays the part of virt-controller and virt-handler that walks a hot-plugged
// volume's vmi.status.volumeStatus entry from Pending to Ready (and back out through Detaching),
// plugging the guest's disk (package disks) when the volume becomes Ready. It acts on running
// VMIs only and owns only the status entries of hot-pluggable volumes.
package hotplug

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tenantcloud/tenantcloud/test/sim/disks"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

// FaultPrefix starts every fault point of this package: "hotplug/<phase>" is passed before a
// volume enters <phase> (Pending, Bound, AttachedToNode, MountedToPod, Ready,
// UnMountedFromPod, Detaching) and "hotplug/Unplugged" before its entry is removed. A stall
// holds the volume in its current phase; an armed failure leaves it there with reason
// FailedHotplugSync and a Warning event, and the step is retried after PhaseDelay.
const FaultPrefix = "hotplug/"

// FaultPoint is the fault point passed before a volume enters phase.
func FaultPoint(phase kubevirtv1.VolumePhase) string { return FaultPrefix + string(phase) }

// DefaultPhaseDelay is the time between two steps of the walk when Options leaves it unset.
const DefaultPhaseDelay = time.Second

// Options configures the controller.
type Options struct {
	// Disks receives the plug/unplug/resize of guest devices; nil walks the phases only.
	Disks *disks.Manager
	// PhaseDelay is the least time a volume spends in each phase (default DefaultPhaseDelay).
	PhaseDelay time.Duration
	// Faults is consulted at every step; nil injects nothing.
	Faults *fault.Injector
	// Name distinguishes controllers when several run in one manager (default "sim-hotplug").
	Name string
}

// Setup registers the VMI volume-status controller and, when Disks is set, the PVC controller
// that resizes and deletes backing disks, with mgr.
func Setup(mgr manager.Manager, opts Options) error {
	if opts.PhaseDelay <= 0 {
		opts.PhaseDelay = DefaultPhaseDelay
	}
	if opts.Name == "" {
		opts.Name = "sim-hotplug"
	}
	r := &reconciler{
		client:   mgr.GetClient(),
		reader:   mgr.GetAPIReader(),
		opts:     opts,
		recorder: mgr.GetEventRecorder(opts.Name),
		since:    map[volumeKey]phaseSince{},
		uids:     map[types.NamespacedName]types.UID{},
	}
	toVMIs := handler.EnqueueRequestsFromMapFunc(r.vmisUsingClaim)
	err := ctrl.NewControllerManagedBy(mgr).
		Named(opts.Name).
		For(&kubevirtv1.VirtualMachineInstance{}).
		Watches(&corev1.PersistentVolumeClaim{}, toVMIs).
		Watches(&cdiv1.DataVolume{}, toVMIs).
		// Latency faults block a worker; more workers keep other VMIs moving meanwhile.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up %s controller: %w", opts.Name, err)
	}
	if opts.Disks == nil {
		return nil
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named(opts.Name + "-pvc").
		For(&corev1.PersistentVolumeClaim{}).
		Complete(&pvcReconciler{client: mgr.GetClient(), disks: opts.Disks})
	if err != nil {
		return fmt.Errorf("setting up %s-pvc controller: %w", opts.Name, err)
	}
	return nil
}

type volumeKey struct {
	vmi    types.NamespacedName
	volume string
}

// phaseSince remembers when the controller first saw a volume in a phase, so each step can
// wait PhaseDelay without sleeping: the reconcile requeues for the remainder.
type phaseSince struct {
	phase kubevirtv1.VolumePhase
	at    time.Time
}

type reconciler struct {
	client   client.Client
	reader   client.Reader
	opts     Options
	recorder events.EventRecorder

	mu    sync.Mutex
	since map[volumeKey]phaseSince
	// uids tracks which VMI incarnation owns the plugged disks: a VM restart makes a new VMI
	// of the same name, whose guest starts without the old one's hot-plugged devices.
	uids map[types.NamespacedName]types.UID
}

// waited returns how much longer the volume must stay in phase before its next step.
func (r *reconciler) waited(key volumeKey, phase kubevirtv1.VolumePhase, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.since[key]
	if !ok || s.phase != phase {
		s = phaseSince{phase: phase, at: now}
		r.since[key] = s
	}
	return r.opts.PhaseDelay - now.Sub(s.at)
}

func (r *reconciler) entered(key volumeKey, phase kubevirtv1.VolumePhase, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if phase == phaseGone {
		delete(r.since, key)
		return
	}
	r.since[key] = phaseSince{phase: phase, at: now}
}

// forgetVMI drops the timers of a VMI that is gone, and its UID.
func (r *reconciler) forgetVMI(name types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.since {
		if k.vmi == name {
			delete(r.since, k)
		}
	}
	delete(r.uids, name)
}

// swapUID records uid as the current incarnation of name and reports whether another one was
// recorded before.
func (r *reconciler) swapUID(name types.NamespacedName, uid types.UID) (replaced bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.uids[name]
	r.uids[name] = uid
	return ok && old != uid
}

// vmisUsingClaim maps a PVC or DataVolume event to the VMIs in its namespace that name it in
// their spec or status, so waiting volumes move as soon as their claim does.
func (r *reconciler) vmisUsingClaim(ctx context.Context, obj client.Object) []ctrl.Request {
	var list kubevirtv1.VirtualMachineInstanceList
	if err := r.client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []ctrl.Request
	for i := range list.Items {
		if usesClaim(&list.Items[i], obj.GetName()) {
			out = append(out, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

func usesClaim(vmi *kubevirtv1.VirtualMachineInstance, claim string) bool {
	for _, v := range vmi.Spec.Volumes {
		if claimName(v) == claim {
			return true
		}
	}
	for _, s := range vmi.Status.VolumeStatus {
		if s.PersistentVolumeClaimInfo != nil && s.PersistentVolumeClaimInfo.ClaimName == claim {
			return true
		}
	}
	return false
}

// claimName is the PVC behind a volume (a DataVolume's PVC has its name), or "".
func claimName(v kubevirtv1.Volume) string {
	switch {
	case v.PersistentVolumeClaim != nil:
		return v.PersistentVolumeClaim.ClaimName
	case v.DataVolume != nil:
		return v.DataVolume.Name
	}
	return ""
}

func isHotplug(v kubevirtv1.Volume) bool {
	return (v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.Hotpluggable) ||
		(v.DataVolume != nil && v.DataVolume.Hotpluggable)
}
