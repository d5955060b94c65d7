package capi

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	capierrors "sigs.k8s.io/cluster-api/api/deprecated/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// machineReconciler plays Cluster API's Machine controller (and, for Machines whose bootstrap
// is a configRef, a bootstrap provider): it adopts the KubevirtMachine, copies its providerID
// and failure, finds the tenant Node by providerID, and walks the phases Pending →
// Provisioning → Provisioned → Running (Deleting on the way out).
type machineReconciler struct {
	reconcilerBase
	clock *simmgr.StepClock
}

func (r *machineReconciler) setupWithManager(mgr manager.Manager) error {
	r.clock = simmgr.NewStepClock()
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-capi-machine").
		For(&clusterv1.Machine{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return r.opts.wants(o.(*clusterv1.Machine).Spec.ClusterName)
		}))).
		Owns(r.gvk.newMachine()).
		// Cluster API's --machine-concurrency default.
		WithOptions(controller.Options{MaxConcurrentReconciles: 10}).
		Complete(r)
}

// machineState is what one pass learned about a Machine's dependencies.
type machineState struct {
	infra        *unstructured.Unstructured
	infraMissing bool
	node         *corev1.Node
}

func (r *machineReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	m := &clusterv1.Machine{}
	if err := r.client.Get(ctx, req.NamespacedName, m); err != nil {
		if apierrors.IsNotFound(err) {
			r.clock.Forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	paused, err := r.paused(ctx, m.Spec.ClusterName, m)
	if err != nil {
		return ctrl.Result{}, err
	}
	if paused {
		return ctrl.Result{}, r.setMachineStatus(ctx, m, machineState{}, true)
	}
	if m.DeletionTimestamp != nil {
		return r.reconcileDelete(ctx, m)
	}
	if !controllerutil.ContainsFinalizer(m, clusterv1.MachineFinalizer) {
		err := simmgr.Update(ctx, r.client, r.reader, m, false, func(m *clusterv1.Machine) bool {
			return controllerutil.AddFinalizer(m, clusterv1.MachineFinalizer)
		})
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to Machine %s: %w", req, err)
		}
	}

	res, err := r.reconcileBootstrap(ctx, m)
	if err != nil {
		return ctrl.Result{}, err
	}
	// A providerID learned in this pass is reported (phase Provisioned) before the Node is
	// looked for: on a real cluster the guest's kubelet joins minutes after the VM is up,
	// whereas here it may already have, and Provisioned would never be seen.
	hadProviderID := m.Spec.ProviderID != ""
	st, err := r.reconcileInfra(ctx, m)
	if err != nil {
		return ctrl.Result{}, err
	}
	if st.infraMissing {
		res = soonest(res, ctrl.Result{RequeueAfter: r.opts.poll()})
	}
	if m.Spec.ProviderID != "" && !hadProviderID {
		res = soonest(res, ctrl.Result{RequeueAfter: r.opts.poll()})
	} else if m.Spec.ProviderID != "" {
		if st.node, err = r.reconcileNode(ctx, m); err != nil {
			return ctrl.Result{}, err
		}
		if st.node == nil {
			// Cluster API watches the workload cluster's Nodes; the simulator polls it.
			res = soonest(res, ctrl.Result{RequeueAfter: r.opts.poll()})
		}
	}
	return res, r.setMachineStatus(ctx, m, st, false)
}

// reconcileBootstrap gives a Machine whose bootstrap is a configRef its data secret after
// PhaseDelay, as a bootstrap provider would; a Machine with neither configRef nor
// dataSecretName waits for one forever (phase Pending), as in Cluster API.
func (r *machineReconciler) reconcileBootstrap(ctx context.Context, m *clusterv1.Machine) (ctrl.Result, error) {
	if m.Spec.Bootstrap.DataSecretName != nil || !m.Spec.Bootstrap.ConfigRef.IsDefined() {
		return ctrl.Result{}, nil
	}
	if left := r.clock.Remaining(client.ObjectKeyFromObject(m), m.UID, "bootstrap", r.opts.PhaseDelay); left > 0 {
		return ctrl.Result{RequeueAfter: left}, nil
	}
	err := simmgr.Update(ctx, r.client, r.reader, m, false, func(m *clusterv1.Machine) bool {
		if m.Spec.Bootstrap.DataSecretName != nil {
			return false
		}
		m.Spec.Bootstrap.DataSecretName = ptrTo(m.Name)
		return true
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("setting bootstrap data of Machine %s/%s: %w", m.Namespace, m.Name, err)
	}
	return ctrl.Result{}, nil
}

// reconcileInfra adopts the KubevirtMachine (controller reference to the Machine, which is
// what CAPK waits for) and copies its providerID into the Machine spec once it is ready.
func (r *machineReconciler) reconcileInfra(ctx context.Context, m *clusterv1.Machine) (machineState, error) {
	kvm := r.gvk.newMachine()
	err := r.client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.InfrastructureRef.Name}, kvm)
	if apierrors.IsNotFound(err) {
		return machineState{infraMissing: true}, nil
	}
	if err != nil {
		return machineState{}, fmt.Errorf("reading KubevirtMachine of Machine %s/%s: %w", m.Namespace, m.Name, err)
	}
	if !metav1.IsControlledBy(kvm, m) {
		err := simmgr.Update(ctx, r.client, r.reader, kvm, false, func(kvm *unstructured.Unstructured) bool {
			refs := []metav1.OwnerReference{*metav1.NewControllerRef(m, clusterv1.GroupVersion.WithKind("Machine"))}
			for _, ref := range kvm.GetOwnerReferences() {
				if ref.Kind != "MachineSet" && ref.Kind != "Machine" {
					refs = append(refs, ref)
				}
			}
			kvm.SetOwnerReferences(refs)
			return true
		})
		if err != nil {
			return machineState{}, fmt.Errorf("adopting KubevirtMachine %s/%s: %w", kvm.GetNamespace(), kvm.GetName(), err)
		}
	}
	ready, _, _ := unstructured.NestedBool(kvm.Object, "status", "ready")
	providerID, _, _ := unstructured.NestedString(kvm.Object, "spec", "providerID")
	if ready && providerID != "" && m.Spec.ProviderID != providerID {
		err := simmgr.Update(ctx, r.client, r.reader, m, false, func(m *clusterv1.Machine) bool {
			if m.Spec.ProviderID == providerID {
				return false
			}
			m.Spec.ProviderID = providerID
			return true
		})
		if err != nil {
			return machineState{}, fmt.Errorf("setting providerID of Machine %s/%s: %w", m.Namespace, m.Name, err)
		}
	}
	return machineState{infra: kvm}, nil
}

// setMachineStatus writes what Cluster API's Machine controller reports: initialization,
// addresses, failure (under status.deprecated.v1beta1 in the v1beta2 API), nodeRef/nodeInfo,
// conditions and phase.
func (r *machineReconciler) setMachineStatus(ctx context.Context, m *clusterv1.Machine, st machineState, paused bool) error {
	err := simmgr.Update(ctx, r.client, r.reader, m, true, func(m *clusterv1.Machine) bool {
		before := m.Status.DeepCopy()
		if !paused {
			applyInfraStatus(m, st.infra)
			if st.node != nil {
				m.Status.NodeRef = clusterv1.MachineNodeReference{Name: st.node.Name}
				m.Status.NodeInfo = st.node.Status.NodeInfo.DeepCopy()
			}
			if m.Spec.Bootstrap.DataSecretName != nil {
				m.Status.Initialization.BootstrapDataSecretCreated = ptrTo(true)
			}
		}
		setMachineConditions(m, st, paused)
		setMachinePhase(m, r.opts.LegacyFailedPhase)
		m.Status.ObservedGeneration = m.Generation
		return !equality.Semantic.DeepEqual(before, &m.Status)
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("updating status of Machine %s/%s: %w", m.Namespace, m.Name, err)
	}
	return nil
}

// applyInfraStatus copies what the KubevirtMachine reports: provisioned, addresses, failure.
func applyInfraStatus(m *clusterv1.Machine, kvm *unstructured.Unstructured) {
	if kvm == nil {
		return
	}
	if ready, _, _ := unstructured.NestedBool(kvm.Object, "status", "ready"); ready && m.Spec.ProviderID != "" {
		m.Status.Initialization.InfrastructureProvisioned = ptrTo(true)
	}
	if addrs, found, _ := unstructured.NestedSlice(kvm.Object, "status", "addresses"); found {
		m.Status.Addresses = nil
		for _, a := range addrs {
			am, _ := a.(map[string]any)
			t, _ := am["type"].(string)
			v, _ := am["address"].(string)
			m.Status.Addresses = append(m.Status.Addresses, clusterv1.MachineAddress{Type: clusterv1.MachineAddressType(t), Address: v})
		}
	}
	reason, _, _ := unstructured.NestedString(kvm.Object, "status", "failureReason")
	msg, _, _ := unstructured.NestedString(kvm.Object, "status", "failureMessage")
	if reason == "" && msg == "" {
		return
	}
	if m.Status.Deprecated == nil {
		m.Status.Deprecated = &clusterv1.MachineDeprecatedStatus{}
	}
	if m.Status.Deprecated.V1Beta1 == nil {
		m.Status.Deprecated.V1Beta1 = &clusterv1.MachineV1Beta1DeprecatedStatus{}
	}
	if reason != "" {
		m.Status.Deprecated.V1Beta1.FailureReason = ptrTo(capierrors.MachineStatusError(reason))
	}
	if msg != "" {
		// Cluster API's wording when it copies an infrastructure failure.
		m.Status.Deprecated.V1Beta1.FailureMessage = ptrTo(fmt.Sprintf("Failure detected from referenced resource %v with name %q: %s",
			kvm.GroupVersionKind(), kvm.GetName(), msg))
	}
}

func soonest(a, b ctrl.Result) ctrl.Result {
	switch {
	case a.RequeueAfter == 0:
		return b
	case b.RequeueAfter == 0:
		return a
	}
	return ctrl.Result{RequeueAfter: min(a.RequeueAfter, b.RequeueAfter)}
}
