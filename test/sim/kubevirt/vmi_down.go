package kubevirt

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// stepStopping is the clock step of a graceful guest shutdown.
const stepStopping = "Stopping"

// reconcileDown handles a VMI being deleted or already final. A deleted VMI whose domain runs
// shuts down for PhaseDelay (launcher pod Terminating meanwhile) and ends Succeeded — or
// Failed if vmi/Succeeded is armed to fail; one that never got a domain ends Failed at once.
// Then the launcher pod goes, addresses are released and, once no pod is left, virt-handler's
// finalizer comes off. A final VMI that is not deleted keeps its finished pod, as in KubeVirt.
func (r *vmiReconciler) reconcileDown(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) (ctrl.Result, error) {
	if !vmi.IsFinal() {
		switch vmi.Status.Phase {
		case kubevirtv1.Scheduled, kubevirtv1.Running:
			return r.shutdown(ctx, vmi, pod)
		default:
			// Deleted before any domain ran: virt-controller marks it Failed.
			return ctrl.Result{}, r.finish(ctx, vmi, pod, kubevirtv1.Failed, "", "VMI was deleted before it was running")
		}
	}

	deleting := vmi.DeletionTimestamp != nil
	if err := r.finishPod(ctx, pod, vmi.Status.Phase == kubevirtv1.Succeeded, deleting); err != nil {
		return ctrl.Result{}, err
	}
	r.alloc.Release(string(vmi.UID))
	r.place.forget(client.ObjectKeyFromObject(vmi))
	if !deleting {
		return ctrl.Result{}, nil
	}
	if left, err := r.launcher(ctx, vmi); err != nil || left != nil {
		return ctrl.Result{RequeueAfter: r.opts.poll()}, err
	}
	ownerGone, err := r.ownerVMGone(ctx, vmi)
	if err != nil {
		return ctrl.Result{}, err
	}
	err = simmgr.Update(ctx, r.client, r.reader, vmi, false, func(v *kubevirtv1.VirtualMachineInstance) bool {
		changed := controllerutil.RemoveFinalizer(v, kubevirtv1.VirtualMachineInstanceFinalizer)
		changed = controllerutil.RemoveFinalizer(v, kubevirtv1.DeprecatedVirtualMachineInstanceFinalizer) || changed
		// The VM controller removes its own finalizer; without a VM nobody would.
		if ownerGone {
			changed = controllerutil.RemoveFinalizer(v, kubevirtv1.VirtualMachineControllerFinalizer) || changed
		}
		return changed
	})
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("releasing finalizers of VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	return ctrl.Result{}, nil
}

// shutdown is virt-handler shutting the guest down gracefully after a VMI deletion.
func (r *vmiReconciler) shutdown(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) (ctrl.Result, error) {
	// virt-controller deletes the launcher pod right away; it stays Terminating until the
	// guest is down because a kubelet only removes it then.
	if pod != nil && pod.DeletionTimestamp == nil {
		if err := r.client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("deleting launcher pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	if res, waiting := r.wait(vmi, stepStopping); waiting {
		return res, nil
	}
	hold, failure, err := r.pass(ctx, FaultVMISucceeded)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case hold:
		return ctrl.Result{RequeueAfter: r.opts.poll()}, nil
	case failure != nil:
		return ctrl.Result{}, r.finish(ctx, vmi, pod, kubevirtv1.Failed, reasonInjected, failure.Error())
	}
	return ctrl.Result{}, r.finish(ctx, vmi, pod, kubevirtv1.Succeeded, "", "")
}

// fail ends the VMI in phase Failed with reason; its launcher exits with an error.
func (r *vmiReconciler) fail(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod, reason, msg string) error {
	ctrl.LoggerFrom(ctx).Info("VMI failed", "vmi", client.ObjectKeyFromObject(vmi), "reason", reason, "message", msg)
	return r.finish(ctx, vmi, pod, kubevirtv1.Failed, reason, msg)
}

// finish moves the VMI to a final phase and reports the launcher exited accordingly.
func (r *vmiReconciler) finish(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod, phase kubevirtv1.VirtualMachineInstancePhase, reason, msg string) error {
	now := metav1.Now()
	err := simmgr.Update(ctx, r.client, r.reader, vmi, false, func(v *kubevirtv1.VirtualMachineInstance) bool {
		if v.IsFinal() {
			return false
		}
		setPhase(v, phase, now)
		if reason != "" {
			v.Status.Reason = reason
		}
		readyReason := reason
		if readyReason == "" {
			readyReason = "PodTerminating"
		}
		setVMICondition(v, kubevirtv1.VirtualMachineInstanceCondition{Type: kubevirtv1.VirtualMachineInstanceReady,
			Status: corev1.ConditionFalse, Reason: readyReason, Message: msg, LastTransitionTime: now})
		removeVMICondition(v, kubevirtv1.VirtualMachineInstanceAgentConnected)
		return true
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("moving VMI %s/%s to %s: %w", vmi.Namespace, vmi.Name, phase, err)
	}
	return r.finishPod(ctx, pod, phase == kubevirtv1.Succeeded, false)
}

// finishPod reports the launcher container exited (as its kubelet would) and, with remove,
// deletes the pod for good: grace period 0 is the kubelet confirming the containers are gone.
func (r *vmiReconciler) finishPod(ctx context.Context, pod *corev1.Pod, succeeded, remove bool) error {
	if pod == nil {
		return nil
	}
	if !podFinal(pod) {
		now := metav1.Now()
		err := simmgr.Update(ctx, r.client, r.reader, pod, true, func(p *corev1.Pod) bool {
			if podFinal(p) {
				return false
			}
			markPodFinished(p, succeeded, now)
			return true
		})
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("finishing launcher pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	if remove {
		if err := r.client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("removing launcher pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	return nil
}

func (r *vmiReconciler) ownerVMGone(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) (bool, error) {
	ref := metav1.GetControllerOf(vmi)
	if ref == nil || ref.Kind != "VirtualMachine" {
		return true, nil
	}
	vm := &kubevirtv1.VirtualMachine{}
	err := r.reader.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: ref.Name}, vm)
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading owner VM of VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	return vm.UID != ref.UID, nil
}

// cleanupGone forgets a VMI that no longer exists and deletes launcher pods it left behind.
// Without a garbage collector in the test control plane nothing else would.
func (r *vmiReconciler) cleanupGone(ctx context.Context, key types.NamespacedName) error {
	if uid, ok := r.clock.UID(key); ok {
		r.alloc.Release(string(uid))
	}
	r.clock.Forget(key)
	r.place.forget(key)
	var pods corev1.PodList
	if err := r.reader.List(ctx, &pods, client.InNamespace(key.Namespace),
		client.MatchingLabels{kubevirtv1.AppLabel: launcherAppValue}); err != nil {
		return fmt.Errorf("listing launcher pods of deleted VMI %s: %w", key, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		ref := metav1.GetControllerOf(pod)
		if ref == nil || ref.Kind != "VirtualMachineInstance" || ref.Name != key.Name {
			continue
		}
		r.alloc.Release(pod.Labels[kubevirtv1.CreatedByLabel])
		if err := r.client.Delete(ctx, pod, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting orphaned launcher pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	return nil
}
