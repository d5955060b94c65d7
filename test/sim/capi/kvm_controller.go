package capi

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	capierrors "sigs.k8s.io/cluster-api/api/deprecated/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// kvmFinalizer is CAPK's KubevirtMachine finalizer.
const kvmFinalizer = "kubevirtmachine.infrastructure.cluster.x-k8s.io"

// kvmReconciler plays CAPK's KubevirtMachine controller: it creates the VM, reports the
// machine ready with addresses and providerID kubevirt://<name> once the VMI is Ready, sets
// that providerID on the tenant Node of the same name (there is no KubeVirt cloud provider to
// do it), and on deletion deletes the VM.
type kvmReconciler struct{ reconcilerBase }

func (r *kvmReconciler) setupWithManager(mgr manager.Manager) error {
	toKVM := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name, ns := o.GetLabels()[LabelKubevirtMachineName], o.GetLabels()[LabelKubevirtMachineNamespace]
		if name == "" || ns == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
	})
	machineToKVM := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		m := o.(*clusterv1.Machine)
		if m.Spec.InfrastructureRef.Kind != kindKubevirtMachine {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: m.Spec.InfrastructureRef.Name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-capk-kubevirtmachine").
		For(r.gvk.newMachine(), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return r.opts.wants(o.GetLabels()[clusterv1.ClusterNameLabel])
		}))).
		Watches(&kubevirtv1.VirtualMachine{}, toKVM).
		Watches(&kubevirtv1.VirtualMachineInstance{}, toKVM).
		Watches(&clusterv1.Machine{}, machineToKVM).
		// CAPK's --concurrency default.
		WithOptions(controller.Options{MaxConcurrentReconciles: 10}).
		Complete(r)
}

func (r *kvmReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	kvm := r.gvk.newMachine()
	if err := r.client.Get(ctx, req.NamespacedName, kvm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !r.opts.wants(kvm.GetLabels()[clusterv1.ClusterNameLabel]) {
		return ctrl.Result{}, nil
	}
	if kvm.GetDeletionTimestamp() != nil {
		return ctrl.Result{}, r.reconcileDelete(ctx, kvm)
	}
	// CAPK waits for the Machine controller to adopt the KubevirtMachine.
	owner := ownerMachine(kvm)
	if owner == "" {
		return ctrl.Result{}, nil
	}
	m := &clusterv1.Machine{}
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: kvm.GetNamespace(), Name: owner}, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !controllerutil.ContainsFinalizer(kvm, kvmFinalizer) {
		err := simmgr.Update(ctx, r.client, r.reader, kvm, false, func(kvm *unstructured.Unstructured) bool {
			return controllerutil.AddFinalizer(kvm, kvmFinalizer)
		})
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to KubevirtMachine %s: %w", req, err)
		}
	}
	if m.Spec.Bootstrap.DataSecretName == nil {
		return ctrl.Result{}, r.setStatus(ctx, kvm, kvmStatus{reason: "WaitingForBootstrapData"})
	}
	if reason, _, _ := unstructured.NestedString(kvm.Object, "status", "failureReason"); reason != "" {
		return ctrl.Result{}, nil // terminal, as in CAPK: only deleting the Machine helps
	}

	vmKey := types.NamespacedName{Namespace: vmNamespace(kvm), Name: kvm.GetName()}
	vm := &kubevirtv1.VirtualMachine{}
	if err := r.reader.Get(ctx, vmKey, vm); apierrors.IsNotFound(err) {
		return r.createVM(ctx, kvm, m)
	} else if err != nil {
		return ctrl.Result{}, fmt.Errorf("reading VM %s: %w", vmKey, err)
	}
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := r.client.Get(ctx, vmKey, vmi); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("reading VMI %s: %w", vmKey, err)
		}
		vmi = nil
	}
	st := kvmStatus{reason: "VMNotReady"}
	if ip := readyAddress(vmi); ip != "" {
		st = kvmStatus{ready: true, ip: ip}
		if err := r.setProviderID(ctx, kvm); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.setStatus(ctx, kvm, st); err != nil {
		return ctrl.Result{}, err
	}
	if st.ready {
		return r.updateNodeProviderID(ctx, kvm)
	}
	return ctrl.Result{}, nil
}

func ownerMachine(kvm *unstructured.Unstructured) string {
	for _, ref := range kvm.GetOwnerReferences() {
		if ref.Kind == "Machine" && ref.APIVersion == clusterv1.GroupVersion.String() {
			return ref.Name
		}
	}
	return ""
}

// readyAddress returns the VMI's first address once it is Ready (CAPK needs both).
func readyAddress(vmi *kubevirtv1.VirtualMachineInstance) string {
	if vmi == nil || vmi.DeletionTimestamp != nil {
		return ""
	}
	ready := false
	for _, c := range vmi.Status.Conditions {
		if c.Type == kubevirtv1.VirtualMachineInstanceReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready || len(vmi.Status.Interfaces) == 0 {
		return ""
	}
	return vmi.Status.Interfaces[0].IP
}

// createVM passes the machine/Provision fault point and creates the VM. An injected failure is
// recorded as a terminal CreateError on the KubevirtMachine.
func (r *kvmReconciler) createVM(ctx context.Context, kvm *unstructured.Unstructured, m *clusterv1.Machine) (ctrl.Result, error) {
	if r.opts.Faults.Stalled(FaultMachineProvision) {
		return ctrl.Result{RequeueAfter: r.opts.poll()}, r.setStatus(ctx, kvm, kvmStatus{reason: "VMNotReady"})
	}
	if err := r.opts.Faults.Check(ctx, FaultMachineProvision); err != nil {
		var fe *fault.Error
		if !errors.As(err, &fe) {
			return ctrl.Result{}, err
		}
		ctrl.LoggerFrom(ctx).Info("VM provisioning failed", "kubevirtMachine", kvm.GetName(), "error", err)
		return ctrl.Result{}, r.setStatus(ctx, kvm, kvmStatus{reason: "VMCreateFailed",
			failureReason: string(capierrors.CreateMachineError), failureMessage: "failed to create VM: " + err.Error()})
	}
	vm, err := buildVM(kvm, m)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.client.Create(ctx, vm); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("creating VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created VM", "vm", client.ObjectKeyFromObject(vm))
	return ctrl.Result{}, r.setStatus(ctx, kvm, kvmStatus{reason: "VMNotReady"})
}

func (r *kvmReconciler) setProviderID(ctx context.Context, kvm *unstructured.Unstructured) error {
	want := infra.ProviderIDPrefix + kvm.GetName()
	err := simmgr.Update(ctx, r.client, r.reader, kvm, false, func(kvm *unstructured.Unstructured) bool {
		if id, _, _ := unstructured.NestedString(kvm.Object, "spec", "providerID"); id != "" {
			return false // CAPK sets it once
		}
		_ = unstructured.SetNestedField(kvm.Object, want, "spec", "providerID")
		return true
	})
	if err != nil {
		return fmt.Errorf("setting providerID of KubevirtMachine %s/%s: %w", kvm.GetNamespace(), kvm.GetName(), err)
	}
	return nil
}

// kvmStatus is the part of KubevirtMachine status one pass decides.
type kvmStatus struct {
	ready                         bool
	ip                            string
	reason                        string // VMProvisioned=False reason when not ready
	failureReason, failureMessage string
}

func (r *kvmReconciler) setStatus(ctx context.Context, kvm *unstructured.Unstructured, st kvmStatus) error {
	now := metav1.Now().UTC().Format("2006-01-02T15:04:05Z")
	err := simmgr.Update(ctx, r.client, r.reader, kvm, true, func(kvm *unstructured.Unstructured) bool {
		before, _, _ := unstructured.NestedMap(kvm.Object, "status")
		status := map[string]any{}
		for k, v := range before {
			status[k] = v
		}
		status["ready"] = st.ready
		if st.failureReason != "" {
			status["failureReason"], status["failureMessage"] = st.failureReason, st.failureMessage
		}
		if st.ready {
			name := kvm.GetName()
			status["addresses"] = []any{
				map[string]any{"type": "Hostname", "address": name},
				map[string]any{"type": "InternalIP", "address": st.ip},
				map[string]any{"type": "ExternalIP", "address": st.ip},
				map[string]any{"type": "InternalDNS", "address": name},
			}
		}
		status["conditions"] = v1beta1Conditions(status["conditions"], st, now)
		if equality.Semantic.DeepEqual(before, status) {
			return false
		}
		_ = unstructured.SetNestedMap(kvm.Object, status, "status")
		return true
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("updating status of KubevirtMachine %s/%s: %w", kvm.GetNamespace(), kvm.GetName(), err)
	}
	return nil
}

// v1beta1Conditions sets CAPK's VMProvisioned and Ready conditions (Cluster API v1beta1 style,
// with severity), keeping the transition time of a condition whose status did not change.
func v1beta1Conditions(existing any, st kvmStatus, now string) []any {
	old := map[string]map[string]any{}
	if list, ok := existing.([]any); ok {
		for _, c := range list {
			if cm, ok := c.(map[string]any); ok {
				if t, _ := cm["type"].(string); t != "" {
					old[t] = cm
				}
			}
		}
	}
	mk := func(t string) map[string]any {
		c := map[string]any{"type": t, "status": "True", "lastTransitionTime": now}
		if !st.ready {
			c["status"], c["reason"] = "False", st.reason
			c["severity"] = "Info"
			if st.failureReason != "" {
				c["severity"], c["message"] = "Error", st.failureMessage
			}
		}
		if prev, ok := old[t]; ok && prev["status"] == c["status"] {
			c["lastTransitionTime"] = prev["lastTransitionTime"]
		}
		return c
	}
	return []any{mk("Ready"), mk("VMProvisioned")}
}

// updateNodeProviderID is CAPK's: set spec.providerID on the tenant Node named after the
// machine, once, and record that in status.nodeupdated.
func (r *kvmReconciler) updateNodeProviderID(ctx context.Context, kvm *unstructured.Unstructured) (ctrl.Result, error) {
	if done, _, _ := unstructured.NestedBool(kvm.Object, "status", "nodeupdated"); done {
		return ctrl.Result{}, nil
	}
	node := &corev1.Node{}
	if err := r.opts.Tenant.Get(ctx, client.ObjectKey{Name: kvm.GetName()}, node); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{RequeueAfter: r.opts.poll()}, nil // the guest has not joined yet
		}
		return ctrl.Result{}, fmt.Errorf("reading tenant node %s: %w", kvm.GetName(), err)
	}
	want := infra.ProviderIDPrefix + kvm.GetName()
	if node.Spec.ProviderID != want {
		err := simmgr.Update(ctx, r.opts.Tenant, r.opts.Tenant, node, false, func(n *corev1.Node) bool {
			if n.Spec.ProviderID == want {
				return false
			}
			n.Spec.ProviderID = want
			return true
		})
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("setting providerID of tenant node %s: %w", node.Name, err)
		}
	}
	err := simmgr.Update(ctx, r.client, r.reader, kvm, true, func(kvm *unstructured.Unstructured) bool {
		_ = unstructured.SetNestedField(kvm.Object, true, "status", "nodeupdated")
		return true
	})
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// reconcileDelete is CAPK's: delete the VM and drop the finalizer at once. CAPK does not wait
// for the VM to be gone, so the KubevirtMachine (and then the Machine) can disappear while
// KubeVirt is still shutting the VM down.
func (r *kvmReconciler) reconcileDelete(ctx context.Context, kvm *unstructured.Unstructured) error {
	vm := &kubevirtv1.VirtualMachine{}
	vm.Namespace, vm.Name = vmNamespace(kvm), kvm.GetName()
	if err := r.client.Delete(ctx, vm); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	err := simmgr.Update(ctx, r.client, r.reader, kvm, false, func(kvm *unstructured.Unstructured) bool {
		return controllerutil.RemoveFinalizer(kvm, kvmFinalizer)
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("releasing KubevirtMachine %s/%s: %w", kvm.GetNamespace(), kvm.GetName(), err)
	}
	return nil
}
