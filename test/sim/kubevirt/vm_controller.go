package kubevirt

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// vmReconciler plays virt-controller's VirtualMachine controller: it turns a VM's run
// strategy into a VMI that exists or not, and reports the VMI's state on the VM.
type vmReconciler struct {
	client client.Client
	// reader bypasses the cache: the VMI is read fresh on every pass, which stands in for
	// virt-controller's create/delete expectations (no double create, no stale status).
	reader client.Reader
	opts   Options
}

func (r *vmReconciler) setupWithManager(mgr manager.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-kubevirt-vm").
		For(&kubevirtv1.VirtualMachine{}).
		Owns(&kubevirtv1.VirtualMachineInstance{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *vmReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vm := &kubevirtv1.VirtualMachine{}
	if err := r.client.Get(ctx, req.NamespacedName, vm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	vmi, err := r.currentVMI(ctx, vm)
	if err != nil {
		return ctrl.Result{}, err
	}

	var res ctrl.Result
	var out vmOutcome
	if vm.DeletionTimestamp != nil {
		if out, err = r.reconcileDelete(ctx, vm, vmi); err != nil {
			return ctrl.Result{}, err
		}
	} else {
		if !controllerutil.ContainsFinalizer(vm, kubevirtv1.VirtualMachineControllerFinalizer) {
			// The finalizer makes VM deletion wait until the VMI is gone, as in KubeVirt.
			err := simmgr.Update(ctx, r.client, r.reader, vm, false, func(vm *kubevirtv1.VirtualMachine) bool {
				return controllerutil.AddFinalizer(vm, kubevirtv1.VirtualMachineControllerFinalizer)
			})
			if err != nil {
				return ctrl.Result{}, fmt.Errorf("adding finalizer to VM %s: %w", req, err)
			}
		}
		if res, vmi, out, err = r.syncRunStrategy(ctx, vm, vmi); err != nil {
			return ctrl.Result{}, err
		}
		if out.syncErr == nil {
			hres, serr, err := r.syncDeclarativeHotplug(ctx, vm, vmi)
			if err != nil {
				return ctrl.Result{}, err
			}
			out.syncErr = serr
			if hres.RequeueAfter > 0 && (res.RequeueAfter == 0 || hres.RequeueAfter < res.RequeueAfter) {
				res.RequeueAfter = hres.RequeueAfter
			}
		}
	}

	if err := r.updateStatus(ctx, vm, vmi, out); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("updating status of VM %s: %w", req, err)
	}
	// KubeVirt drops its finalizer from a final VMI once the VM status recorded it.
	if vmi != nil && vmi.IsFinal() && controllerutil.ContainsFinalizer(vmi, kubevirtv1.VirtualMachineControllerFinalizer) {
		err := simmgr.Update(ctx, r.client, r.reader, vmi, false, func(vmi *kubevirtv1.VirtualMachineInstance) bool {
			return controllerutil.RemoveFinalizer(vmi, kubevirtv1.VirtualMachineControllerFinalizer)
		})
		if client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("removing VM finalizer from VMI %s: %w", req, err)
		}
	}
	if out.syncErr != nil {
		// Returned so the workqueue retries with backoff, like virt-controller's requeue.
		return ctrl.Result{}, out.syncErr
	}
	return res, nil
}

// currentVMI returns the VMI this VM controls, or nil. A same-named VMI controlled by
// something else is not ours to touch.
func (r *vmReconciler) currentVMI(ctx context.Context, vm *kubevirtv1.VirtualMachine) (*kubevirtv1.VirtualMachineInstance, error) {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := r.reader.Get(ctx, client.ObjectKeyFromObject(vm), vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading VMI of VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	if !metav1.IsControlledBy(vmi, vm) {
		ctrl.LoggerFrom(ctx).Info("VMI with the VM's name is not controlled by it; leaving it alone", "vmi", client.ObjectKeyFromObject(vmi))
		return nil, nil
	}
	return vmi, nil
}

func (r *vmReconciler) reconcileDelete(ctx context.Context, vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance) (vmOutcome, error) {
	if vmi != nil {
		return vmOutcome{syncErr: r.stopVMI(ctx, vmi)}, nil
	}
	err := simmgr.Update(ctx, r.client, r.reader, vm, false, func(vm *kubevirtv1.VirtualMachine) bool {
		return controllerutil.RemoveFinalizer(vm, kubevirtv1.VirtualMachineControllerFinalizer)
	})
	if client.IgnoreNotFound(err) != nil {
		return vmOutcome{}, fmt.Errorf("releasing finalizer of VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	return vmOutcome{}, nil
}

// syncRunStrategy is virt-controller's syncRunStrategy for the strategies that need no API
// call to start or stop (start/stop subresources are not simulated; a Start state change
// request written to the status is honoured).
func (r *vmReconciler) syncRunStrategy(ctx context.Context, vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance) (ctrl.Result, *kubevirtv1.VirtualMachineInstance, vmOutcome, error) {
	rs, err := vm.RunStrategy()
	if err != nil {
		return ctrl.Result{}, vmi, vmOutcome{syncErr: &syncError{reasonFailedCreate, err}}, nil
	}
	start := func() (ctrl.Result, *kubevirtv1.VirtualMachineInstance, vmOutcome, error) {
		if left := backoffLeft(vm, time.Now()); left > 0 {
			return ctrl.Result{RequeueAfter: left}, nil, vmOutcome{}, nil
		}
		return r.startVMI(ctx, vm)
	}
	stop := func(out vmOutcome) (ctrl.Result, *kubevirtv1.VirtualMachineInstance, vmOutcome, error) {
		if out.syncErr == nil {
			out.syncErr = r.stopVMI(ctx, vmi)
		}
		return ctrl.Result{}, vmi, out, nil
	}
	switch rs {
	case kubevirtv1.RunStrategyAlways:
		if vmi == nil {
			return start()
		}
		if vmi.IsFinal() {
			return stop(vmOutcome{}) // restarted once the VMI is gone
		}
	case kubevirtv1.RunStrategyRerunOnFailure:
		if vmi == nil {
			// Start the first time (the strategy was never recorded) or when asked to.
			if hasStartRequest(vm) || vm.Status.RunStrategy != rs {
				return start()
			}
			break
		}
		if vmi.DeletionTimestamp == nil && vmi.IsFinal() {
			return stop(vmOutcome{addStartRequest: vmi.Status.Phase == kubevirtv1.Failed})
		}
	case kubevirtv1.RunStrategyManual:
		if vmi == nil && hasStartRequest(vm) {
			return start()
		}
	case kubevirtv1.RunStrategyHalted:
		if vmi != nil {
			return stop(vmOutcome{})
		}
	case kubevirtv1.RunStrategyOnce:
		if vmi == nil {
			return start()
		}
	default:
		return ctrl.Result{}, vmi, vmOutcome{syncErr: &syncError{reasonFailedCreate, fmt.Errorf("unknown runstrategy: %s", rs)}}, nil
	}
	return ctrl.Result{}, vmi, vmOutcome{}, nil
}

// startVMI creates the VMI from the VM template, passing the vm/start fault point first.
func (r *vmReconciler) startVMI(ctx context.Context, vm *kubevirtv1.VirtualMachine) (ctrl.Result, *kubevirtv1.VirtualMachineInstance, vmOutcome, error) {
	if r.opts.Faults.Stalled(FaultVMStart) {
		return ctrl.Result{RequeueAfter: r.opts.poll()}, nil, vmOutcome{}, nil
	}
	if err := r.opts.Faults.Check(ctx, FaultVMStart); err != nil {
		var fe *fault.Error
		if errors.As(err, &fe) {
			return ctrl.Result{}, nil, vmOutcome{syncErr: &syncError{reasonFailedCreate, fmt.Errorf("failure while starting VMI: %w", err)}}, nil
		}
		return ctrl.Result{}, nil, vmOutcome{}, err
	}
	vmi := vmiFromVM(vm)
	if err := r.client.Create(ctx, vmi); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// A VMI of this name appeared meanwhile (ours from a previous pass, or a foreign
			// one); look again shortly rather than failing.
			return ctrl.Result{RequeueAfter: r.opts.poll()}, nil, vmOutcome{}, nil
		}
		return ctrl.Result{}, nil, vmOutcome{syncErr: &syncError{reasonFailedCreate, fmt.Errorf("failure while starting VMI: %w", err)}}, nil
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Started VM by creating its VMI", "vmi", client.ObjectKeyFromObject(vmi))
	return ctrl.Result{}, vmi, vmOutcome{}, nil
}

// stopVMI deletes the VMI; virt-handler (the VMI reconciler) then shuts it down.
func (r *vmReconciler) stopVMI(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) *syncError {
	if vmi == nil || vmi.DeletionTimestamp != nil {
		return nil
	}
	if err := r.client.Delete(ctx, vmi, client.Preconditions{UID: &vmi.UID}); client.IgnoreNotFound(err) != nil {
		return &syncError{reasonFailedDelete, fmt.Errorf("failure while stopping VMI: %w", err)}
	}
	return nil
}

func (r *vmReconciler) updateStatus(ctx context.Context, vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance, out vmOutcome) error {
	now := time.Now()
	return simmgr.Update(ctx, r.client, r.reader, vm, true, func(vm *kubevirtv1.VirtualMachine) bool {
		before := vm.Status.DeepCopy()
		computeVMStatus(vm, vmi, out, now, r.opts.StartFailureBackoff)
		return !equality.Semantic.DeepEqual(before, &vm.Status)
	})
}

// vmiFromVM is virt-controller's SetupVMIFromVM plus the defaults applied when a VMI is
// created: template metadata and spec, owner reference, the VM controller's finalizer, a disk
// for every volume without one, and the default pod network interface.
func vmiFromVM(vm *kubevirtv1.VirtualMachine) *kubevirtv1.VirtualMachineInstance {
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if vm.Spec.Template != nil {
		vmi.ObjectMeta = *vm.Spec.Template.ObjectMeta.DeepCopy()
		vmi.Spec = *vm.Spec.Template.Spec.DeepCopy()
	}
	vmi.Name = vm.Name
	vmi.GenerateName = ""
	vmi.Namespace = vm.Namespace
	vmi.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(vm, kubevirtv1.VirtualMachineGroupVersionKind)}
	vmi.Finalizers = append(vmi.Finalizers, kubevirtv1.VirtualMachineControllerFinalizer)
	if vmi.Annotations == nil {
		vmi.Annotations = map[string]string{}
	}
	// KubeVirt records which VM generation the VMI was started from.
	vmi.Annotations[kubevirtv1.VirtualMachineGenerationAnnotation] = strconv.FormatInt(vm.Generation, 10)
	setDefaultVolumeDisks(&vmi.Spec)
	setDefaultNetwork(&vmi.Spec)
	return vmi
}

func setDefaultVolumeDisks(spec *kubevirtv1.VirtualMachineInstanceSpec) {
	named := map[string]bool{}
	for _, d := range spec.Domain.Devices.Disks {
		named[d.Name] = true
	}
	for _, fs := range spec.Domain.Devices.Filesystems {
		named[fs.Name] = true
	}
	for _, v := range spec.Volumes {
		if !named[v.Name] {
			spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, kubevirtv1.Disk{Name: v.Name})
		}
	}
}

// setDefaultNetwork attaches the pod network as interface "default" (KubeVirt's default
// binding is bridge) unless the spec names interfaces or opts out.
func setDefaultNetwork(spec *kubevirtv1.VirtualMachineInstanceSpec) {
	if a := spec.Domain.Devices.AutoattachPodInterface; a != nil && !*a {
		return
	}
	if len(spec.Networks) != 0 || len(spec.Domain.Devices.Interfaces) != 0 {
		return
	}
	spec.Domain.Devices.Interfaces = []kubevirtv1.Interface{*kubevirtv1.DefaultBridgeNetworkInterface()}
	spec.Networks = []kubevirtv1.Network{*kubevirtv1.DefaultPodNetwork()}
}
