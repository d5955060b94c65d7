package kubevirt

import (
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// syncError is a failure virt-controller reports on the VM's Failure condition.
type syncError struct {
	reason string
	err    error
}

func (e *syncError) Error() string { return e.err.Error() }
func (e *syncError) Unwrap() error { return e.err }

// Reasons virt-controller puts on the Failure condition (KubeVirt's wording).
const (
	reasonFailedCreate = "FailedCreate"
	reasonFailedDelete = "FailedDelete"
)

// vmOutcome is what one pass of the run-strategy logic decided, for the status update.
type vmOutcome struct {
	syncErr         *syncError
	addStartRequest bool // RerunOnFailure asks for a restart after a failed VMI
}

// computeVMStatus fills vm.Status from the VMI the way virt-controller's updateStatus does:
// created/ready, the recorded run strategy, start requests, crash-loop bookkeeping,
// conditions mirrored from the VMI, and the printable status.
func computeVMStatus(vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance, out vmOutcome, now time.Time, backoffBase time.Duration) {
	st := &vm.Status
	st.Created = vmi != nil
	st.Ready = vmi != nil && vmiReady(vmi)
	rs, _ := vm.RunStrategy()
	// KubeVirt records the strategy only once the VM was started at least once.
	if st.RunStrategy != "" || st.Created {
		st.RunStrategy = rs
	}
	if out.addStartRequest && !hasStartRequest(vm) {
		st.StateChangeRequests = append(st.StateChangeRequests, kubevirtv1.VirtualMachineStateChangeRequest{Action: kubevirtv1.StartRequest})
	}
	if hasStartRequest(vm) && vmi != nil && !vmi.IsFinal() {
		st.StateChangeRequests = st.StateChangeRequests[1:]
	}
	if len(st.StateChangeRequests) == 0 {
		st.StateChangeRequests = nil
	}
	syncStartFailure(vm, vmi, now, backoffBase)
	syncVMConditions(vm, vmi, out.syncErr, now)
	st.PrintableStatus = printableStatus(vm, vmi)
}

func vmiReady(vmi *kubevirtv1.VirtualMachineInstance) bool {
	c := vmiCondition(vmi, kubevirtv1.VirtualMachineInstanceReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

func vmiCondition(vmi *kubevirtv1.VirtualMachineInstance, t kubevirtv1.VirtualMachineInstanceConditionType) *kubevirtv1.VirtualMachineInstanceCondition {
	if vmi == nil {
		return nil
	}
	for i := range vmi.Status.Conditions {
		if vmi.Status.Conditions[i].Type == t {
			return &vmi.Status.Conditions[i]
		}
	}
	return nil
}

func hasStartRequest(vm *kubevirtv1.VirtualMachine) bool {
	r := vm.Status.StateChangeRequests
	return len(r) > 0 && r[0].Action == kubevirtv1.StartRequest
}

// wasRunning reports whether the VMI ever reached Running, from its phase history.
func wasRunning(vmi *kubevirtv1.VirtualMachineInstance) bool {
	for _, ts := range vmi.Status.PhaseTransitionTimestamps {
		if ts.Phase == kubevirtv1.Running {
			return true
		}
	}
	return vmi.Status.Phase == kubevirtv1.Running
}

// syncStartFailure counts VMIs that ended before ever running and sets the time before which
// virt-controller will not start another one (KubeVirt's crash-loop backoff).
func syncStartFailure(vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance, now time.Time, base time.Duration) {
	rs, _ := vm.RunStrategy()
	restarts := rs == kubevirtv1.RunStrategyAlways || rs == kubevirtv1.RunStrategyRerunOnFailure || rs == kubevirtv1.RunStrategyOnce
	if (vmi != nil && wasRunning(vmi)) || !restarts {
		vm.Status.StartFailure = nil
		return
	}
	if vmi == nil || !vmi.IsFinal() {
		return
	}
	sf := vm.Status.StartFailure
	if sf != nil && sf.LastFailedVMIUID == vmi.UID {
		return // already counted
	}
	count := 1
	if sf != nil {
		count = sf.ConsecutiveFailCount + 1
	}
	retry := metav1.NewTime(now.Add(startBackoff(count, base)))
	vm.Status.StartFailure = &kubevirtv1.VirtualMachineStartFailure{
		ConsecutiveFailCount: count, LastFailedVMIUID: vmi.UID, RetryAfterTimestamp: &retry,
	}
}

// startBackoff is KubeVirt's calculateStartBackoffTime with its 10s unit replaced by base:
// base × count², plus a random part of up to half that to de-synchronise failing VMs,
// capped at 30 × base (KubeVirt: 300s).
func startBackoff(count int, base time.Duration) time.Duration {
	d := base * time.Duration(count*count)
	d += time.Duration(rand.Int64N(int64(d/2) + 1))
	return min(d, 30*base)
}

// backoffLeft is how long virt-controller still waits before starting a VMI again.
func backoffLeft(vm *kubevirtv1.VirtualMachine, now time.Time) time.Duration {
	sf := vm.Status.StartFailure
	if sf == nil || sf.RetryAfterTimestamp == nil {
		return 0
	}
	return max(sf.RetryAfterTimestamp.Sub(now), 0)
}

// syncVMConditions mirrors the VMI's conditions onto the VM: Ready always (False when there is
// no VMI), Failure from the last sync error, every other VMI condition as is.
func syncVMConditions(vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance, syncErr *syncError, now time.Time) {
	ts := metav1.NewTime(now)
	switch c := vmiCondition(vmi, kubevirtv1.VirtualMachineInstanceReady); {
	case vmi == nil:
		setVMCondition(vm, kubevirtv1.VirtualMachineCondition{Type: kubevirtv1.VirtualMachineReady, Status: corev1.ConditionFalse,
			Reason: "VMINotExists", Message: "VMI does not exist", LastProbeTime: ts, LastTransitionTime: ts})
	case c == nil:
		setVMCondition(vm, kubevirtv1.VirtualMachineCondition{Type: kubevirtv1.VirtualMachineReady, Status: corev1.ConditionFalse,
			Reason: "VMIConditionMissing", Message: "VMI is missing the Ready condition", LastProbeTime: ts, LastTransitionTime: ts})
	default:
		setVMCondition(vm, kubevirtv1.VirtualMachineCondition{Type: kubevirtv1.VirtualMachineReady, Status: c.Status,
			Reason: c.Reason, Message: c.Message, LastProbeTime: c.LastProbeTime, LastTransitionTime: c.LastTransitionTime})
	}
	if syncErr != nil {
		setVMCondition(vm, kubevirtv1.VirtualMachineCondition{Type: kubevirtv1.VirtualMachineFailure, Status: corev1.ConditionTrue,
			Reason: syncErr.reason, Message: syncErr.Error(), LastTransitionTime: ts})
	} else {
		removeVMCondition(vm, kubevirtv1.VirtualMachineFailure)
	}
	if vmi == nil {
		return
	}
	mirrored := map[kubevirtv1.VirtualMachineConditionType]bool{}
	for _, c := range vmi.Status.Conditions {
		t := kubevirtv1.VirtualMachineConditionType(c.Type)
		if unmirrored(t) {
			continue
		}
		mirrored[t] = true
		setVMCondition(vm, kubevirtv1.VirtualMachineCondition{Type: t, Status: c.Status, Reason: c.Reason,
			Message: c.Message, LastProbeTime: c.LastProbeTime, LastTransitionTime: c.LastTransitionTime})
	}
	for _, c := range vm.Status.Conditions {
		if !unmirrored(c.Type) && !mirrored[c.Type] {
			removeVMCondition(vm, c.Type)
		}
	}
}

func unmirrored(t kubevirtv1.VirtualMachineConditionType) bool {
	return t == kubevirtv1.VirtualMachineReady || t == kubevirtv1.VirtualMachineFailure || t == kubevirtv1.VirtualMachineRestartRequired
}

// setVMCondition adds c or replaces the condition of its type when status or reason changed,
// as KubeVirt's condition manager does, so an unchanged state keeps its timestamps.
func setVMCondition(vm *kubevirtv1.VirtualMachine, c kubevirtv1.VirtualMachineCondition) {
	for i := range vm.Status.Conditions {
		if vm.Status.Conditions[i].Type != c.Type {
			continue
		}
		if vm.Status.Conditions[i].Status != c.Status || vm.Status.Conditions[i].Reason != c.Reason {
			vm.Status.Conditions[i] = c
		}
		return
	}
	vm.Status.Conditions = append(vm.Status.Conditions, c)
}

func removeVMCondition(vm *kubevirtv1.VirtualMachine, t kubevirtv1.VirtualMachineConditionType) {
	kept := vm.Status.Conditions[:0]
	for _, c := range vm.Status.Conditions {
		if c.Type != t {
			kept = append(kept, c)
		}
	}
	vm.Status.Conditions = kept
}

// printableStatus applies virt-controller's precedence (first match wins) to the statuses the
// simulator can produce.
func printableStatus(vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance) kubevirtv1.VirtualMachinePrintableStatus {
	rs, _ := vm.RunStrategy()
	switch {
	case vm.DeletionTimestamp != nil:
		return kubevirtv1.VirtualMachineStatusTerminating
	case vmi != nil && !vmi.IsFinal() && vmi.DeletionTimestamp != nil:
		return kubevirtv1.VirtualMachineStatusStopping
	case vmi != nil && vmi.Status.Phase == kubevirtv1.Running:
		return kubevirtv1.VirtualMachineStatusRunning
	case unschedulable(vmi):
		return kubevirtv1.VirtualMachineStatusUnschedulable
	case vmi != nil && (vmi.Status.Phase == kubevirtv1.VmPhaseUnset || vmi.Status.Phase == kubevirtv1.Pending ||
		vmi.Status.Phase == kubevirtv1.Scheduling || vmi.Status.Phase == kubevirtv1.Scheduled):
		return kubevirtv1.VirtualMachineStatusStarting
	case (vmi == nil || vmi.IsFinal()) && vm.Status.StartFailure != nil && vm.Status.StartFailure.ConsecutiveFailCount > 0 &&
		(rs == kubevirtv1.RunStrategyAlways || rs == kubevirtv1.RunStrategyRerunOnFailure || rs == kubevirtv1.RunStrategyOnce):
		return kubevirtv1.VirtualMachineStatusCrashLoopBackOff
	case vmi == nil || vmi.IsFinal():
		return kubevirtv1.VirtualMachineStatusStopped
	}
	return kubevirtv1.VirtualMachineStatusUnknown
}

func unschedulable(vmi *kubevirtv1.VirtualMachineInstance) bool {
	c := vmiCondition(vmi, kubevirtv1.VirtualMachineInstanceConditionType(corev1.PodScheduled))
	return c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
}
