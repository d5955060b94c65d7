package capi

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// Reasons of the Deleting condition (Cluster API's).
const (
	deletingWaitingForVolumeDetach = clusterv1.MachineDeletingWaitingForVolumeDetachReason
	deletingWaitingForInfra        = clusterv1.MachineDeletingWaitingForInfrastructureDeletionReason
	deletingNode                   = clusterv1.MachineDeletingDeletingNodeReason
	deletingHeld                   = "DeletionHeld"
)

// reconcileDelete is Cluster API's Machine deletion: cordon the Node (pod eviction is not
// simulated), wait until no VolumeAttachment in the tenant references it, delete the
// KubevirtMachine and wait for it to go (CAPK deletes the VM then), delete the tenant Node,
// release the finalizer. The Machine is in phase Deleting throughout.
func (r *machineReconciler) reconcileDelete(ctx context.Context, m *clusterv1.Machine) (ctrl.Result, error) {
	res, reason, err := r.tearDown(ctx, m)
	if err != nil {
		return ctrl.Result{}, err
	}
	if reason == "" {
		err := simmgr.Update(ctx, r.client, r.reader, m, false, func(m *clusterv1.Machine) bool {
			return controllerutil.RemoveFinalizer(m, clusterv1.MachineFinalizer)
		})
		if client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("releasing Machine %s/%s: %w", m.Namespace, m.Name, err)
		}
		return ctrl.Result{}, nil
	}
	err = simmgr.Update(ctx, r.client, r.reader, m, true, func(m *clusterv1.Machine) bool {
		before := m.Status.DeepCopy()
		setCond(m, clusterv1.MachineDeletingCondition, true, reason, "")
		setCond(m, clusterv1.MachineReadyCondition, false, "Deleting", "")
		setCond(m, clusterv1.MachineAvailableCondition, false, "Deleting", "")
		setMachinePhase(m, r.opts.LegacyFailedPhase)
		return !equality.Semantic.DeepEqual(before, &m.Status)
	})
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("updating status of deleting Machine %s/%s: %w", m.Namespace, m.Name, err)
	}
	return res, nil
}

// tearDown does the next deletion step; it returns the Deleting reason while work remains,
// "" once the finalizer may go.
func (r *machineReconciler) tearDown(ctx context.Context, m *clusterv1.Machine) (ctrl.Result, string, error) {
	wait := ctrl.Result{RequeueAfter: r.opts.poll()}
	if r.opts.Faults.Stalled(FaultMachineDelete) {
		return wait, deletingHeld, nil
	}
	if err := r.opts.Faults.Check(ctx, FaultMachineDelete); err != nil {
		var fe *fault.Error
		if errors.As(err, &fe) {
			return wait, deletingHeld, nil // transient: retried on the next pass
		}
		return ctrl.Result{}, "", err
	}

	nodeName := m.Status.NodeRef.Name
	if nodeName != "" {
		node := &corev1.Node{}
		err := r.opts.Tenant.Get(ctx, client.ObjectKey{Name: nodeName}, node)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return ctrl.Result{}, "", fmt.Errorf("reading tenant node %s: %w", nodeName, err)
		default:
			if err := r.cordon(ctx, node); err != nil {
				return ctrl.Result{}, "", err
			}
			if !unreachable(node) {
				attached, err := r.volumesAttached(ctx, nodeName)
				if err != nil {
					return ctrl.Result{}, "", err
				}
				if attached {
					return wait, deletingWaitingForVolumeDetach, nil
				}
			}
		}
	}

	kvm := r.gvk.newMachine()
	err := r.client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.InfrastructureRef.Name}, kvm)
	switch {
	case err == nil:
		if kvm.GetDeletionTimestamp() == nil {
			if err := r.client.Delete(ctx, kvm); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, "", fmt.Errorf("deleting KubevirtMachine %s/%s: %w", kvm.GetNamespace(), kvm.GetName(), err)
			}
		}
		return wait, deletingWaitingForInfra, nil
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, "", fmt.Errorf("reading KubevirtMachine of Machine %s/%s: %w", m.Namespace, m.Name, err)
	}

	if nodeName != "" {
		node := &corev1.Node{}
		node.Name = nodeName
		if err := r.opts.Tenant.Delete(ctx, node); client.IgnoreNotFound(err) != nil {
			return wait, deletingNode, fmt.Errorf("deleting tenant node %s: %w", nodeName, err)
		}
	}
	return ctrl.Result{}, "", nil
}

func (r *machineReconciler) cordon(ctx context.Context, node *corev1.Node) error {
	err := simmgr.Update(ctx, r.opts.Tenant, r.opts.Tenant, node, false, func(n *corev1.Node) bool {
		if n.Spec.Unschedulable {
			return false
		}
		n.Spec.Unschedulable = true
		return true
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("cordoning tenant node %s: %w", node.Name, err)
	}
	return nil
}

// volumesAttached reports whether the tenant still has volumes attached to the node: entries
// in node.status.volumesAttached or VolumeAttachments naming it (Cluster API waits for both).
func (r *machineReconciler) volumesAttached(ctx context.Context, nodeName string) (bool, error) {
	node := &corev1.Node{}
	if err := r.opts.Tenant.Get(ctx, client.ObjectKey{Name: nodeName}, node); err == nil && len(node.Status.VolumesAttached) > 0 {
		return true, nil
	}
	var vas storagev1.VolumeAttachmentList
	if err := r.opts.Tenant.List(ctx, &vas); err != nil {
		return false, fmt.Errorf("listing tenant VolumeAttachments: %w", err)
	}
	for _, va := range vas.Items {
		if va.Spec.NodeName == nodeName {
			return true, nil
		}
	}
	return false, nil
}

// unreachable is Cluster API's IsNodeUnreachable: Ready is Unknown, so nothing would detach.
func unreachable(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionUnknown
		}
	}
	return false
}
