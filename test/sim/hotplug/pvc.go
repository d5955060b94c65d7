package hotplug

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/sim/disks"
)

// pvcReconciler follows claims for the disks they back: a grown status.capacity (the resize
// finished) grows the guest's device; a deleted claim takes its data with it.
type pvcReconciler struct {
	client client.Client
	disks  *disks.Manager
}

func (p *pvcReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := p.client.Get(ctx, req.NamespacedName, pvc); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("getting PVC %s: %w", req.NamespacedName, err)
		}
		if err := p.disks.Delete(req.Namespace, req.Name); err != nil {
			return ctrl.Result{}, fmt.Errorf("deleting disk of PVC %s: %w", req.NamespacedName, err)
		}
		return ctrl.Result{}, nil
	}
	// Only status.capacity counts: the request grows first, the volume only when the resizer
	// reports it done.
	q, ok := pvc.Status.Capacity[corev1.ResourceStorage]
	if !ok || q.IsZero() {
		return ctrl.Result{}, nil
	}
	if err := p.disks.Resize(pvc.Namespace, pvc.Name, q.Value()); err != nil {
		return ctrl.Result{}, fmt.Errorf("resizing disk of PVC %s: %w", req.NamespacedName, err)
	}
	return ctrl.Result{}, nil
}
