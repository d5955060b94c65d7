package kubevirt

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// vmiReconciler plays virt-controller's VMI controller, the scheduler and kubelet for the
// launcher pod, and virt-handler: Pending → Scheduling (pod created, bound) → Scheduled (pod
// running, addresses) → Running (domain booted), and the way down on deletion or failure.
// Each step lasts Options.PhaseDelay, timed by an in-memory clock with requeue-after.
type vmiReconciler struct {
	client client.Client
	reader client.Reader
	opts   Options
	alloc  *allocator
	place  *placement
	clock  *simmgr.StepClock
}

func (r *vmiReconciler) setupWithManager(mgr manager.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-kubevirt-vmi").
		For(&kubevirtv1.VirtualMachineInstance{}).
		Owns(&corev1.Pod{}).
		// virt-controller's VMI workers (defaultVMIControllerThreads).
		WithOptions(controller.Options{MaxConcurrentReconciles: 10}).
		Complete(r)
}

// Reasons the simulator gives a Failed VMI (status.reason).
const (
	reasonInjected      = "InjectedFailure"
	reasonPodTerminated = "PodTerminating"
	reasonPodMissing    = "PodMissing"
)

func (r *vmiReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := r.client.Get(ctx, req.NamespacedName, vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.cleanupGone(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, err
	}
	pod, err := r.launcher(ctx, vmi)
	if err != nil {
		return ctrl.Result{}, err
	}
	if vmi.DeletionTimestamp != nil || vmi.IsFinal() {
		return r.reconcileDown(ctx, vmi, pod)
	}
	switch vmi.Status.Phase {
	case kubevirtv1.VmPhaseUnset:
		return ctrl.Result{}, r.admit(ctx, vmi)
	case kubevirtv1.Pending:
		return r.createLauncher(ctx, vmi, pod)
	case kubevirtv1.Scheduling:
		return r.startLauncher(ctx, vmi, pod)
	case kubevirtv1.Scheduled:
		return r.boot(ctx, vmi, pod)
	case kubevirtv1.Running:
		if podGoingDown(pod) {
			// Someone deleted the launcher under a running VMI: the guest dies with it.
			return ctrl.Result{}, r.fail(ctx, vmi, pod, reasonPodTerminated, "virt-launcher pod is terminating")
		}
	}
	return ctrl.Result{}, nil
}

// launcher returns the VMI's virt-launcher pod (uncached, so a pod created in the previous
// pass is never created twice), or nil.
func (r *vmiReconciler) launcher(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.reader.List(ctx, &pods, client.InNamespace(vmi.Namespace),
		client.MatchingLabels{kubevirtv1.CreatedByLabel: string(vmi.UID)}); err != nil {
		return nil, fmt.Errorf("listing launcher pods of VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	for i := range pods.Items {
		if metav1.IsControlledBy(&pods.Items[i], vmi) {
			return &pods.Items[i], nil
		}
	}
	return nil, nil
}

// wait reports how long the VMI must still stay in step before moving on.
func (r *vmiReconciler) wait(vmi *kubevirtv1.VirtualMachineInstance, step string) (ctrl.Result, bool) {
	left := r.clock.Remaining(client.ObjectKeyFromObject(vmi), vmi.UID, step, r.opts.PhaseDelay)
	return ctrl.Result{RequeueAfter: left}, left > 0
}

// pass consults a fault point: hold=true means stay in the current phase and look again;
// a non-nil failure is an injected failure the VMI must fail with.
func (r *vmiReconciler) pass(ctx context.Context, point string) (hold bool, failure error, err error) {
	if r.opts.Faults.Stalled(point) {
		return true, nil, nil
	}
	if err := r.opts.Faults.Check(ctx, point); err != nil {
		var fe *fault.Error
		if errors.As(err, &fe) {
			return false, err, nil
		}
		return false, nil, err
	}
	return false, nil, nil
}

func setPhase(vmi *kubevirtv1.VirtualMachineInstance, phase kubevirtv1.VirtualMachineInstancePhase, now metav1.Time) {
	if vmi.Status.Phase == phase {
		return
	}
	vmi.Status.Phase = phase
	vmi.Status.PhaseTransitionTimestamps = append(vmi.Status.PhaseTransitionTimestamps,
		kubevirtv1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: phase, PhaseTransitionTimestamp: now})
}

func setVMICondition(vmi *kubevirtv1.VirtualMachineInstance, c kubevirtv1.VirtualMachineInstanceCondition) {
	for i := range vmi.Status.Conditions {
		if vmi.Status.Conditions[i].Type == c.Type {
			if vmi.Status.Conditions[i].Status == c.Status && vmi.Status.Conditions[i].Reason == c.Reason {
				return
			}
			vmi.Status.Conditions[i] = c
			return
		}
	}
	vmi.Status.Conditions = append(vmi.Status.Conditions, c)
}

func removeVMICondition(vmi *kubevirtv1.VirtualMachineInstance, t kubevirtv1.VirtualMachineInstanceConditionType) {
	kept := vmi.Status.Conditions[:0]
	for _, c := range vmi.Status.Conditions {
		if c.Type != t {
			kept = append(kept, c)
		}
	}
	vmi.Status.Conditions = kept
}

// admit is virt-controller taking the VMI: its finalizer (so virt-handler can clean up
// before the object goes) and phase Pending.
func (r *vmiReconciler) admit(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) error {
	now := metav1.Now()
	err := simmgr.Update(ctx, r.client, r.reader, vmi, false, func(v *kubevirtv1.VirtualMachineInstance) bool {
		if v.Status.Phase != kubevirtv1.VmPhaseUnset || v.DeletionTimestamp != nil {
			return false
		}
		controllerutil.AddFinalizer(v, kubevirtv1.VirtualMachineInstanceFinalizer)
		setPhase(v, kubevirtv1.Pending, now)
		return true
	})
	return client.IgnoreNotFound(err)
}

// createLauncher creates the virt-launcher pod after the Pending delay; the VMI is then
// Scheduling.
func (r *vmiReconciler) createLauncher(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) (ctrl.Result, error) {
	if res, waiting := r.wait(vmi, string(kubevirtv1.Pending)); waiting {
		return res, nil
	}
	if pod == nil {
		pod = launcherPod(vmi)
		if err := r.client.Create(ctx, pod); err != nil {
			return ctrl.Result{}, fmt.Errorf("creating launcher pod of VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
		}
	}
	now := metav1.Now()
	err := simmgr.Update(ctx, r.client, r.reader, vmi, false, func(v *kubevirtv1.VirtualMachineInstance) bool {
		if v.Status.Phase != kubevirtv1.Pending {
			return false
		}
		setPhase(v, kubevirtv1.Scheduling, now)
		v.Status.ActivePods = map[types.UID]string{pod.UID: ""}
		if pod.Status.QOSClass != "" {
			v.Status.QOSClass = ptrTo(pod.Status.QOSClass)
		}
		v.Status.LauncherContainerImageVersion = launcherImage
		return true
	})
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// startLauncher binds the pod to an infra node and, after the Scheduling delay and the
// vmi/Scheduled fault point, starts it: the pod runs with its addresses, the VMI is Scheduled
// on that node.
func (r *vmiReconciler) startLauncher(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) (ctrl.Result, error) {
	if podGoingDown(pod) {
		return ctrl.Result{}, r.fail(ctx, vmi, pod, reasonPodMissing, "virt-launcher pod does not exist or is terminating")
	}
	if pod.Spec.NodeName == "" {
		bound, err := r.bind(ctx, vmi, pod)
		if err != nil || !bound {
			return ctrl.Result{RequeueAfter: r.opts.poll()}, err
		}
	}
	if res, waiting := r.wait(vmi, string(kubevirtv1.Scheduling)); waiting {
		return res, nil
	}
	hold, failure, err := r.pass(ctx, FaultVMIScheduled)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case hold:
		return ctrl.Result{RequeueAfter: r.opts.poll()}, nil
	case failure != nil:
		return ctrl.Result{}, r.fail(ctx, vmi, pod, reasonInjected, failure.Error())
	}

	addrs, err := r.alloc.Allocate(string(vmi.UID))
	if err != nil {
		// A real CNI would leave the pod in ContainerCreating; so do we, retrying.
		ctrl.LoggerFrom(ctx).Error(err, "No pod network address for VMI", "vmi", client.ObjectKeyFromObject(vmi))
		return ctrl.Result{RequeueAfter: r.opts.poll()}, nil
	}
	hostIP, err := r.hostIP(ctx, pod.Spec.NodeName)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := metav1.Now()
	err = simmgr.Update(ctx, r.client, r.reader, pod, true, func(p *corev1.Pod) bool {
		if p.Status.Phase == corev1.PodRunning {
			return false
		}
		markPodStarted(p, hostIP, addrs, now)
		return true
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("starting launcher pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	node := pod.Spec.NodeName
	err = simmgr.Update(ctx, r.client, r.reader, vmi, false, func(v *kubevirtv1.VirtualMachineInstance) bool {
		if v.Status.Phase != kubevirtv1.Scheduling {
			return false
		}
		setPhase(v, kubevirtv1.Scheduled, now)
		v.Status.NodeName = node
		if v.Labels == nil {
			v.Labels = map[string]string{}
		}
		v.Labels[kubevirtv1.NodeNameLabel] = node
		v.Status.ActivePods = map[types.UID]string{pod.UID: node}
		removeVMICondition(v, kubevirtv1.VirtualMachineInstanceConditionType(corev1.PodScheduled))
		return true
	})
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// bind plays kube-scheduler for the launcher pod. When no node fits, the pod and the VMI get
// PodScheduled=False/Unschedulable, as a real scheduler and virt-controller would report.
func (r *vmiReconciler) bind(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) (bool, error) {
	var nodes corev1.NodeList
	if err := r.client.List(ctx, &nodes); err != nil {
		return false, fmt.Errorf("listing nodes to schedule VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	key := client.ObjectKeyFromObject(vmi)
	node, why := r.place.choose(key, func(load map[string]int) (string, string) { return pickNode(vmi, nodes.Items, load) })
	now := metav1.Now()
	if node == "" {
		err := simmgr.Update(ctx, r.client, r.reader, pod, true, func(p *corev1.Pod) bool {
			if c := podCondition(p, corev1.PodScheduled); c != nil && c.Message == why {
				return false
			}
			setPodCondition(p, corev1.PodScheduled, corev1.ConditionFalse, corev1.PodReasonUnschedulable, why, now)
			return true
		})
		if err != nil {
			return false, fmt.Errorf("reporting launcher pod %s/%s unschedulable: %w", pod.Namespace, pod.Name, err)
		}
		err = simmgr.Update(ctx, r.client, r.reader, vmi, false, func(v *kubevirtv1.VirtualMachineInstance) bool {
			before := len(v.Status.Conditions)
			setVMICondition(v, kubevirtv1.VirtualMachineInstanceCondition{
				Type: kubevirtv1.VirtualMachineInstanceConditionType(corev1.PodScheduled), Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: why, LastProbeTime: now, LastTransitionTime: now,
			})
			return len(v.Status.Conditions) != before
		})
		return false, client.IgnoreNotFound(err)
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	if err := r.client.SubResource("binding").Create(ctx, pod, binding); err != nil {
		r.place.forget(key)
		return false, fmt.Errorf("binding launcher pod %s/%s to %s: %w", pod.Namespace, pod.Name, node, err)
	}
	pod.Spec.NodeName = node
	return true, nil
}

func (r *vmiReconciler) hostIP(ctx context.Context, nodeName string) (string, error) {
	node := &corev1.Node{}
	if err := r.client.Get(ctx, types.NamespacedName{Name: nodeName}, node); err != nil {
		return "", fmt.Errorf("reading node %s: %w", nodeName, err)
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address, nil
		}
	}
	return "", nil
}

// boot is virt-handler starting the domain after the Scheduled delay and the vmi/Running
// fault point: the VMI is Running and Ready with its interfaces, the launcher pod Ready.
func (r *vmiReconciler) boot(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) (ctrl.Result, error) {
	if podGoingDown(pod) {
		return ctrl.Result{}, r.fail(ctx, vmi, pod, reasonPodTerminated, "virt-launcher pod is terminating")
	}
	if res, waiting := r.wait(vmi, string(kubevirtv1.Scheduled)); waiting {
		return res, nil
	}
	hold, failure, err := r.pass(ctx, FaultVMIRunning)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case hold:
		return ctrl.Result{RequeueAfter: r.opts.poll()}, nil
	case failure != nil:
		return ctrl.Result{}, r.fail(ctx, vmi, pod, reasonInjected, failure.Error())
	}
	var addrs []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			addrs = append(addrs, a)
		}
	}
	now := metav1.Now()
	err = simmgr.Update(ctx, r.client, r.reader, pod, true, func(p *corev1.Pod) bool {
		if c := podCondition(p, corev1.PodReady); c != nil && c.Status == corev1.ConditionTrue {
			return false
		}
		markPodReady(p, now)
		return true
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("marking launcher pod %s/%s ready: %w", pod.Namespace, pod.Name, err)
	}
	err = simmgr.Update(ctx, r.client, r.reader, vmi, false, func(v *kubevirtv1.VirtualMachineInstance) bool {
		if v.Status.Phase != kubevirtv1.Scheduled {
			return false
		}
		setPhase(v, kubevirtv1.Running, now)
		v.Status.Interfaces = interfaceStatuses(v, addrs)
		v.Status.GuestOSInfo = guestOSInfo()
		setVMICondition(v, kubevirtv1.VirtualMachineInstanceCondition{Type: kubevirtv1.VirtualMachineInstanceReady, Status: corev1.ConditionTrue, LastTransitionTime: now})
		setVMICondition(v, kubevirtv1.VirtualMachineInstanceCondition{Type: kubevirtv1.VirtualMachineInstanceAgentConnected, Status: corev1.ConditionTrue, LastTransitionTime: now})
		return true
	})
	return ctrl.Result{}, client.IgnoreNotFound(err)
}
