package cdi

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// releaseClaim is the pvc-protection controller: the apiserver's StorageObjectInUseProtection
// admission adds kubernetes.io/pvc-protection to every claim, and only this controller
// removes it, once no scheduled pod references the claim. (Like upstream, a pod that is
// scheduled keeps the claim even if it has terminated, until the pod object is deleted.)
func (s *sim) releaseClaim(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if !slices.Contains(pvc.Finalizers, finalizerPVCProtection) {
		return nil
	}
	var pods corev1.PodList
	if err := s.live.List(ctx, &pods, client.InNamespace(pvc.Namespace)); err != nil {
		return fmt.Errorf("listing pods using PVC %s/%s: %w", pvc.Namespace, pvc.Name, err)
	}
	for _, pod := range pods.Items {
		if pod.Spec.NodeName != "" && podUsesClaim(&pod, pvc.Name) {
			klog.FromContext(ctx).V(2).Info("Keeping PVC because it is being used", "pod", klog.KObj(&pod))
			return nil
		}
	}
	return removeFinalizer(ctx, s, pvc, finalizerPVCProtection)
}

func podUsesClaim(pod *corev1.Pod, claim string) bool {
	return slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool {
		return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim
	})
}

func removeFinalizer(ctx context.Context, s *sim, obj client.Object, finalizer string) error {
	err := s.writeObject(ctx, obj, func() bool {
		f := obj.GetFinalizers()
		if !slices.Contains(f, finalizer) {
			return false
		}
		obj.SetFinalizers(slices.DeleteFunc(f, func(x string) bool { return x == finalizer }))
		return true
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing finalizer %s from %s: %w", finalizer, obj.GetName(), err)
	}
	return nil
}

func (s *sim) setupVolumes(mgr manager.Manager) error {
	return builder.ControllerManagedBy(mgr).Named("sim-pv-controller").
		For(&corev1.PersistentVolume{}).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(volumeOfClaim)).
		Complete(reconcile.Func(s.reconcileVolume))
}

// reconcileVolume plays the PV controller's release and reclaim, the external-provisioner's
// DeleteVolume and the pv-protection controller: a bound volume whose claim is gone becomes
// Released; a Released volume with reclaim policy Delete that LINSTOR provisioned is deleted
// from the backend and its PV removed; a PV being deleted loses its protection once it is not
// Bound.
func (s *sim) reconcileVolume(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pv := &corev1.PersistentVolume{}
	if err := s.Get(ctx, req.NamespacedName, pv); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	log := klog.FromContext(ctx).WithValues("pv", pv.Name)
	if pv.Status.Phase == corev1.VolumeBound && pv.Spec.ClaimRef != nil {
		gone, err := s.claimGone(ctx, pv.Spec.ClaimRef)
		if err != nil || !gone {
			return reconcile.Result{}, err
		}
		log.V(2).Info("Claim gone, releasing volume", "claim", pv.Spec.ClaimRef.Name)
		if err := s.writeStatus(ctx, pv, func() bool {
			changed := pv.Status.Phase != corev1.VolumeReleased
			pv.Status.Phase = corev1.VolumeReleased
			return changed
		}); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
	}
	released := pv.Status.Phase == corev1.VolumeReleased || pv.Status.Phase == corev1.VolumeFailed
	if released && pv.DeletionTimestamp == nil && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete &&
		pv.Annotations[annProvisionedBy] == Driver {
		log.V(2).Info("Deleting released volume")
		if err := s.Delete(ctx, pv); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("deleting released PV %s: %w", pv.Name, err)
		}
		return reconcile.Result{}, nil
	}
	if pv.DeletionTimestamp != nil && pv.Status.Phase != corev1.VolumeBound {
		// The provisioner's finalizer goes once the backend volume is deleted (it is,
		// the moment we decide to), then pv-protection.
		if err := removeFinalizer(ctx, s, pv, finalizerProvisioner); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, removeFinalizer(ctx, s, pv, finalizerPVProtection)
	}
	return reconcile.Result{}, nil
}

// claimGone reports whether the claim a PV was bound to no longer exists (or is another
// claim of the same name).
func (s *sim) claimGone(ctx context.Context, ref *corev1.ObjectReference) (bool, error) {
	pvc := &metav1.PartialObjectMetadata{}
	pvc.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"))
	err := s.live.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, pvc)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("getting claim %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	return ref.UID != "" && pvc.UID != ref.UID, nil
}

// volumeOfClaim maps a claim (also a deleted one) to its volume.
func volumeOfClaim(_ context.Context, obj client.Object) []reconcile.Request {
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok || pvc.Spec.VolumeName == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: pvc.Spec.VolumeName}}}
}
