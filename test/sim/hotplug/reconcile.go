package hotplug

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Reconcile moves every hot-plugged volume of one VMI at most one step.
func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := r.client.Get(ctx, req.NamespacedName, vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.guestGone(req.NamespacedName)
		}
		return ctrl.Result{}, fmt.Errorf("getting VMI %s: %w", req.NamespacedName, err)
	}
	if r.swapUID(req.NamespacedName, vmi.UID) {
		// A new incarnation (VM restart): the old guest's devices went with it.
		if err := r.unplugAll(req.NamespacedName); err != nil {
			return ctrl.Result{}, err
		}
	}
	if vmi.DeletionTimestamp != nil || vmi.IsFinal() {
		return ctrl.Result{}, r.guestGone(req.NamespacedName)
	}
	// virt-handler hot-plugs into a running domain only; until then entries stay as they are.
	if !vmi.IsRunning() {
		return ctrl.Result{}, nil
	}
	return r.sync(ctx, vmi)
}

func (r *reconciler) unplugAll(name types.NamespacedName) error {
	if r.opts.Disks == nil {
		return nil
	}
	if err := r.opts.Disks.UnplugVM(name.Namespace, name.Name); err != nil {
		return fmt.Errorf("unplugging disks of %s: %w", name, err)
	}
	return nil
}

// guestGone releases what a VMI that stopped or vanished had plugged.
func (r *reconciler) guestGone(name types.NamespacedName) error {
	if err := r.unplugAll(name); err != nil {
		return err
	}
	r.forgetVMI(name)
	return nil
}

// sync computes the next step of each hot-plugged volume, performs its side effects (disks),
// and writes the changed status entries in one update.
func (r *reconciler) sync(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) (ctrl.Result, error) {
	now := time.Now()
	current := map[string]kubevirtv1.VolumeStatus{}
	for _, s := range vmi.Status.VolumeStatus {
		current[s.Name] = s
	}
	w := &walker{r: r, vmi: vmi, now: now, used: usedTargets(vmi)}
	updates := map[string]update{}
	inSpec := map[string]bool{}
	for _, vol := range vmi.Spec.Volumes {
		if !isHotplug(vol) {
			continue
		}
		inSpec[vol.Name] = true
		st, exists := current[vol.Name]
		if !exists {
			st = kubevirtv1.VolumeStatus{Name: vol.Name}
		}
		if st.HotplugVolume == nil {
			st.HotplugVolume = &kubevirtv1.HotplugVolumeStatus{}
		}
		from := st.Phase
		changed := w.forward(ctx, vol, &st)
		// A volume held before Pending gets no entry, unless the hold is a failure to report.
		if (changed || !exists) && (st.Phase != phaseNone || st.Reason == reasonFailedHotplug) {
			updates[vol.Name] = update{from: from, existed: exists, status: &st}
		}
	}
	for _, s := range vmi.Status.VolumeStatus {
		if s.HotplugVolume == nil || inSpec[s.Name] {
			continue
		}
		st := *s.DeepCopy()
		if changed, gone := w.backward(ctx, &st); gone {
			updates[s.Name] = update{from: s.Phase, existed: true}
		} else if changed {
			updates[s.Name] = update{from: s.Phase, existed: true, status: &st}
		}
	}
	if len(updates) > 0 {
		if err := r.write(ctx, vmi, updates); err != nil {
			// The steps did not happen: their timers and Events are dropped with them, so the
			// retry finds the step due at once, fails again and backs off like virt-handler's
			// queue, instead of waiting a phase delay, succeeding at nothing and starting the
			// backoff over.
			return ctrl.Result{}, err
		}
	}
	for _, done := range w.written {
		done()
	}
	return ctrl.Result{RequeueAfter: w.requeue}, nil
}

// walker carries one reconcile's view of a VMI.
type walker struct {
	r       *reconciler
	vmi     *kubevirtv1.VirtualMachineInstance
	now     time.Time
	used    map[string]bool // guest device names taken
	requeue time.Duration
	// written runs once the status carrying this reconcile's steps is stored: the phase timers
	// and Events of steps that a failed write undid must not count.
	written []func()
}

func (w *walker) after(d time.Duration) {
	if d > 0 && (w.requeue == 0 || d < w.requeue) {
		w.requeue = d
	}
}

func (w *walker) key(volume string) volumeKey {
	return volumeKey{vmi: types.NamespacedName{Namespace: w.vmi.Namespace, Name: w.vmi.Name}, volume: volume}
}

// gate applies the per-phase delay and the fault point before st may enter next. It returns
// false when the step must wait; a failure is recorded on st (changed reports that).
func (w *walker) gate(ctx context.Context, st *kubevirtv1.VolumeStatus, next kubevirtv1.VolumePhase, delay bool) (ok, changed bool) {
	if delay {
		if left := w.r.waited(w.key(st.Name), st.Phase, w.now); left > 0 {
			w.after(left)
			return false, false
		}
	}
	point := FaultPoint(next)
	if w.r.opts.Faults.Stalled(point) {
		w.after(w.r.opts.PhaseDelay)
		return false, false
	}
	if err := w.r.opts.Faults.Check(ctx, point); err != nil {
		return false, w.fail(st, point, err)
	}
	return true, false
}

// fail records a failed step on st the way KubeVirt reports one: the phase stays, reason and
// message say why, a Warning event is emitted, and the step is retried after PhaseDelay.
func (w *walker) fail(st *kubevirtv1.VolumeStatus, step string, err error) bool {
	msg := fmt.Sprintf("%s: %v", step, err)
	klog.V(2).InfoS("Hotplug step failed", "vmi", klog.KObj(w.vmi), "volume", st.Name, "phase", st.Phase, "err", err)
	w.r.recorder.Eventf(w.vmi, nil, "Warning", reasonFailedHotplug, "Hotplug", "Volume %s: %s", st.Name, msg)
	w.after(w.r.opts.PhaseDelay)
	changed := st.Reason != reasonFailedHotplug || st.Message != msg
	st.Reason, st.Message = reasonFailedHotplug, msg
	return changed
}

// moved sets st to phase with upstream's reason and message and schedules the next step.
func (w *walker) moved(st *kubevirtv1.VolumeStatus, phase kubevirtv1.VolumePhase) {
	pod := ""
	if st.HotplugVolume != nil {
		pod = st.HotplugVolume.AttachPodName
	}
	reason, msg := transitionText(phase, st.Name, pod)
	if phase != kubevirtv1.VolumePending {
		st.Reason, st.Message = reason, msg
	}
	st.Phase = phase
	key, vmi, now, volume := w.key(st.Name), w.vmi, w.now, st.Name
	w.written = append(w.written, func() {
		w.r.entered(key, phase, now)
		if reason != "" {
			w.r.recorder.Eventf(vmi, nil, "Normal", reason, "Hotplug", "%s", msg)
		}
		klog.V(2).InfoS("Hotplug volume moved", "vmi", klog.KObj(vmi), "volume", volume, "phase", phase)
	})
	w.after(w.r.opts.PhaseDelay)
}
