package cdi

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcloud/tenantcloud/test/sim/fault"
)

// Annotations and finalizers of the PV controller, external-provisioner and protection
// controllers (values from kubernetes and kubernetes-csi sources).
const (
	annStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	annBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
	annBindCompleted          = "pv.kubernetes.io/bind-completed"
	annBoundByController      = "pv.kubernetes.io/bound-by-controller"
	annProvisionedBy          = "pv.kubernetes.io/provisioned-by"
	annStorageResizer         = "volume.kubernetes.io/storage-resizer"
	finalizerPVCProtection    = "kubernetes.io/pvc-protection"
	finalizerPVProtection     = "kubernetes.io/pv-protection"
	finalizerProvisioner      = "external-provisioner.volume.kubernetes.io/finalizer"
	csiProvisionerIdentityKey = "storage.kubernetes.io/csiProvisionerIdentity"
)

func (s *sim) setupClaims(mgr manager.Manager) error {
	return builder.ControllerManagedBy(mgr).Named("sim-linstor-provisioner").
		For(&corev1.PersistentVolumeClaim{}).
		Watches(&corev1.PersistentVolume{}, handler.EnqueueRequestsFromMapFunc(claimOfVolume)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(claimsOfPod)).
		Watches(&storagev1.StorageClass{}, handler.EnqueueRequestsFromMapFunc(s.pendingClaims)).
		Watches(newSnapshot(), handler.EnqueueRequestsFromMapFunc(s.pendingClaims)).
		Complete(reconcile.Func(s.reconcileClaim))
}

// reconcileClaim plays, for one claim, the PV controller (binding, default class), the
// LINSTOR external-provisioner, the external-resizer, kubelet's node expansion and the
// pvc-protection controller.
func (s *sim) reconcileClaim(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithValues("pvc", req.NamespacedName))
	pvc, err := s.claim(ctx, req.NamespacedName)
	if err != nil || pvc == nil {
		return reconcile.Result{}, err
	}
	switch {
	case pvc.DeletionTimestamp != nil:
		return reconcile.Result{}, s.releaseClaim(ctx, pvc)
	case pvc.Status.Phase == corev1.ClaimBound:
		return s.resize(ctx, pvc)
	case pvc.Spec.VolumeName != "" || isPopulatorClaim(pvc):
		// Pre-bound claims (static binding) are not simulated; populator claims are bound
		// by the DataVolume simulator when their population ends.
		return reconcile.Result{}, nil
	}
	if pvc.Spec.StorageClassName == nil {
		return reconcile.Result{}, s.assignDefaultClass(ctx, pvc)
	}
	sc, err := s.class(ctx, pvc.Spec.StorageClassName)
	if err != nil {
		return reconcile.Result{}, err
	}
	if sc == nil {
		s.events.Eventf(pvc, nil, corev1.EventTypeWarning, "ProvisioningFailed", "Provision",
			"storageclass.storage.k8s.io %q not found", *pvc.Spec.StorageClassName)
		return reconcile.Result{}, nil // the StorageClass watch brings us back
	}
	if sc.Provisioner != Driver {
		s.events.Eventf(pvc, nil, corev1.EventTypeNormal, "ExternalProvisioning", "Provision",
			"Waiting for a volume to be created either by the external provisioner '%s' or manually by the system administrator. "+
				"If volume creation is delayed, please verify that the provisioner is running and correctly registered.", sc.Provisioner)
		return reconcile.Result{}, nil
	}
	if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer && pvc.Annotations[annSelectedNode] == "" {
		s.events.Eventf(pvc, nil, corev1.EventTypeNormal, "WaitForFirstConsumer", "Provision",
			"waiting for first consumer to be created before binding")
		return reconcile.Result{}, nil
	}
	if msg, err := s.dataSourceNotReady(ctx, pvc); err != nil || msg != "" {
		if msg != "" {
			s.events.Eventf(pvc, nil, corev1.EventTypeWarning, "ProvisioningFailed", "Provision",
				"failed to provision volume with StorageClass %q: %s", sc.Name, msg)
		}
		return reconcile.Result{RequeueAfter: s.retryDelay()}, err
	}
	if res, wait := s.wait(pvc.UID, "provision", s.opts.PhaseDelay); wait {
		return res, nil
	}
	return s.provision(ctx, pvc, sc)
}

// provision is the external-provisioner's CreateVolume and the PV controller's binding: a PV
// named pvc-<claim uid> with LINSTOR's capacity, then the claim bound to it. It consults
// FaultPVCBind first. A non-zero result or an error means "not bound yet, come back".
func (s *sim) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass) (reconcile.Result, error) {
	if res, held := s.stalled(FaultPVCBind); held {
		return res, nil
	}
	if err := s.opts.Faults.Check(ctx, FaultPVCBind); err != nil {
		var injected *fault.Error
		if !errors.As(err, &injected) {
			return reconcile.Result{}, err
		}
		s.events.Eventf(pvc, nil, corev1.EventTypeWarning, "ProvisioningFailed", "Provision",
			"failed to provision volume with StorageClass %q: rpc error: code = Internal desc = %v", sc.Name, err)
		s.clock.restart(pvc.UID, "provision")
		return reconcile.Result{RequeueAfter: s.retryDelay()}, nil
	}
	if err := s.annotateProvisioner(ctx, pvc); err != nil {
		return reconcile.Result{}, err
	}
	pv, err := s.createVolume(ctx, pvc, sc)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := s.bind(ctx, pvc, pv); err != nil {
		return reconcile.Result{}, err
	}
	s.clock.done(pvc.UID, "provision")
	s.events.Eventf(pvc, nil, corev1.EventTypeNormal, "ProvisioningSucceeded", "Provision",
		"Successfully provisioned volume %s", pv.Name)
	klog.FromContext(ctx).V(2).Info("Provisioned and bound", "pv", pv.Name, "capacity", pv.Spec.Capacity.Storage())
	return reconcile.Result{}, nil
}

// createVolume creates (or finds) the claim's PV.
func (s *sim) createVolume(ctx context.Context, pvc *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass) (*corev1.PersistentVolume, error) {
	name := "pvc-" + string(pvc.UID)
	pv := &corev1.PersistentVolume{}
	if err := s.live.Get(ctx, client.ObjectKey{Name: name}, pv); err == nil {
		return pv, nil
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("getting PV %s: %w", name, err)
	}
	req := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	mode := volumeModeOf(pvc.Spec.VolumeMode)
	reclaim := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	csi := &corev1.CSIPersistentVolumeSource{
		Driver:           Driver,
		VolumeHandle:     name, // LINSTOR names the resource after the PV
		VolumeAttributes: map[string]string{csiProvisionerIdentityKey: s.identity},
	}
	if mode == corev1.PersistentVolumeFilesystem {
		csi.FSType = "ext4"
		if fs := sc.Parameters["csi.storage.k8s.io/fstype"]; fs != "" {
			csi.FSType = fs
		}
	}
	pv = &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{annProvisionedBy: Driver},
			Finalizers:  []string{finalizerProvisioner},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(linstorCapacity(req.Value()), resource.BinarySI)},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              sc.Name,
			VolumeMode:                    &mode,
			MountOptions:                  sc.MountOptions,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: csi},
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion,
			},
		},
	}
	if err := s.Create(ctx, pv); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating PV %s for PVC %s/%s: %w", name, pvc.Namespace, pvc.Name, err)
	}
	return pv, nil
}

// bind completes the binding from both sides, in the PV controller's order: PV Bound, then
// claim.spec.volumeName, then claim status.
func (s *sim) bind(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) error {
	if err := s.writeStatus(ctx, pv, func() bool {
		changed := pv.Status.Phase != corev1.VolumeBound
		pv.Status.Phase = corev1.VolumeBound
		return changed
	}); err != nil {
		return fmt.Errorf("marking PV %s Bound: %w", pv.Name, err)
	}
	if err := s.writeObject(ctx, pvc, func() bool {
		if pvc.Spec.VolumeName == pv.Name && pvc.Annotations[annBindCompleted] == "yes" {
			return false
		}
		pvc.Spec.VolumeName = pv.Name
		setAnnotation(pvc, annBindCompleted, "yes")
		setAnnotation(pvc, annBoundByController, "yes")
		return true
	}); err != nil {
		return fmt.Errorf("binding PVC %s/%s to %s: %w", pvc.Namespace, pvc.Name, pv.Name, err)
	}
	return s.writeStatus(ctx, pvc, func() bool {
		pvc.Status.Phase = corev1.ClaimBound
		pvc.Status.Capacity = pv.Spec.Capacity.DeepCopy()
		pvc.Status.AccessModes = pv.Spec.AccessModes
		return true
	})
}

// annotateProvisioner marks the claim as the PV controller does before an external
// provisioner acts on it.
func (s *sim) annotateProvisioner(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	return s.writeObject(ctx, pvc, func() bool {
		if pvc.Annotations[annStorageProvisioner] == Driver {
			return false
		}
		setAnnotation(pvc, annStorageProvisioner, Driver)
		setAnnotation(pvc, annBetaStorageProvisioner, Driver)
		return true
	})
}

// assignDefaultClass is the PV controller's retroactive default StorageClass assignment for
// claims created before a default existed (the DefaultStorageClass admission plugin covers
// claims created after).
func (s *sim) assignDefaultClass(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	var classes storagev1.StorageClassList
	if err := s.List(ctx, &classes); err != nil {
		return fmt.Errorf("listing StorageClasses: %w", err)
	}
	def := resolveClass(nil, slices.DeleteFunc(classes.Items, func(sc storagev1.StorageClass) bool {
		return sc.Annotations[annDefaultClass] != "true"
	}))
	if def == nil {
		return nil
	}
	return s.writeObject(ctx, pvc, func() bool {
		if pvc.Spec.StorageClassName != nil {
			return false
		}
		pvc.Spec.StorageClassName = &def.Name
		return true
	})
}

// dataSourceNotReady returns why a claim restored from a snapshot or cloned from a claim by
// the CSI driver cannot be provisioned yet ("" when it can).
func (s *sim) dataSourceNotReady(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (string, error) {
	ds := pvc.Spec.DataSource
	if ds == nil {
		return "", nil
	}
	key := client.ObjectKey{Namespace: pvc.Namespace, Name: ds.Name}
	switch {
	case ds.Kind == "VolumeSnapshot":
		snap, err := s.snapshot(ctx, key)
		if err != nil {
			return "", err
		}
		if snap == nil || !snap.readyToUse() {
			return fmt.Sprintf("error getting handle for DataSource Type VolumeSnapshot by Name %s: snapshot %s is not Ready", ds.Name, ds.Name), nil
		}
		if size, ok := snap.restoreSize(); ok && size.Cmp(pvc.Spec.Resources.Requests[corev1.ResourceStorage]) > 0 {
			return fmt.Sprintf("requested volume size %d is less than the size %d for the source snapshot %s",
				pvc.Spec.Resources.Requests.Storage().Value(), size.Value(), ds.Name), nil
		}
	case ds.Kind == "PersistentVolumeClaim":
		src, err := s.claim(ctx, key)
		if err != nil {
			return "", err
		}
		if src == nil || src.Status.Phase != corev1.ClaimBound {
			return fmt.Sprintf("error getting handle for DataSource Type PersistentVolumeClaim by Name %s: claim is not bound", ds.Name), nil
		}
	}
	return "", nil
}

func setAnnotation(obj metav1.Object, k, v string) {
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[k] = v
	obj.SetAnnotations(ann)
}

// claimOfVolume maps a PV to the claim it is (or was) bound to.
func claimOfVolume(_ context.Context, obj client.Object) []reconcile.Request {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Spec.ClaimRef == nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name}}}
}

// claimsOfPod maps a pod to the claims its volumes use (pvc-protection, node expansion).
func claimsOfPod(_ context.Context, obj client.Object) []reconcile.Request {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	var reqs []reconcile.Request
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: pod.Namespace, Name: v.PersistentVolumeClaim.ClaimName}})
		}
	}
	return reqs
}

// pendingClaims are the claims a StorageClass or snapshot change may unblock.
func (s *sim) pendingClaims(ctx context.Context, _ client.Object) []reconcile.Request {
	var list corev1.PersistentVolumeClaimList
	if err := s.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, pvc := range list.Items {
		if pvc.Status.Phase != corev1.ClaimBound {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pvc)})
		}
	}
	return reqs
}
