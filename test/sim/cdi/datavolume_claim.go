package cdi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// createClaim renders and creates the DataVolume's claim, or records why it cannot.
func (s *sim) createClaim(ctx context.Context, dv *cdiv1.DataVolume, op operation) (reconcile.Result, error) {
	var classes storagev1.StorageClassList
	if err := s.List(ctx, &classes); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing StorageClasses: %w", err)
	}
	spec, sc, err := renderPVCSpec(dv, classes.Items)
	var invalid *claimNotValidError
	if errors.As(err, &invalid) {
		// CDI resets the phase to unset here and retries when StorageClasses change.
		return reconcile.Result{}, s.setStatus(ctx, dv, nil, cdiv1.PhaseUnset, notRunning, reasonClaimNotValid, invalid.msg)
	} else if err != nil {
		return reconcile.Result{}, fmt.Errorf("rendering PVC for DataVolume %s/%s: %w", dv.Namespace, dv.Name, err)
	}
	populator, err := s.usePopulator(ctx, dv, sc)
	if err != nil {
		return reconcile.Result{}, err
	}
	strategy := strategyNone
	switch op {
	case opClonePVC:
		strategy, err = s.prepareClonePVC(ctx, dv, spec, sc, populator)
	case opCloneSnapshot:
		strategy, err = s.prepareCloneSnapshot(ctx, dv, spec, sc, populator)
	}
	var srcErr *sourceError
	if errors.As(err, &srcErr) {
		// The phase stays as it is; the watch on the source brings us back.
		return reconcile.Result{}, s.setStatus(ctx, dv, nil, dv.Status.Phase, notRunning, srcErr.reason, srcErr.msg)
	} else if err != nil {
		return reconcile.Result{}, err
	}
	if err := s.annotateDataVolume(ctx, dv, populator, strategy); err != nil {
		return reconcile.Result{}, err
	}
	pvc := newClaim(dv, spec, op, populator, strategy)
	if err := s.Create(ctx, pvc); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return reconcile.Result{Requeue: true}, nil // our cache is behind
		}
		s.events.Eventf(dv, nil, corev1.EventTypeWarning, "ErrCreatePVC", "CreatePVC", "creating PVC %s: %v", pvc.Name, err)
		return reconcile.Result{}, fmt.Errorf("creating PVC for DataVolume %s/%s: %w", dv.Namespace, dv.Name, err)
	}
	return reconcile.Result{}, s.setStatus(ctx, dv, pvc, cdiv1.Pending, notRunning, "", "")
}

// usePopulator is CDI's decision: the DataVolume's annotation if set, else whether the class
// exists and its provisioner has a CSIDriver object.
func (s *sim) usePopulator(ctx context.Context, dv *cdiv1.DataVolume, sc *storagev1.StorageClass) (bool, error) {
	if v, ok := dv.Annotations[annUsePopulator]; ok {
		return strconv.ParseBool(v)
	}
	if sc == nil {
		return false, nil
	}
	err := s.Get(ctx, client.ObjectKey{Name: sc.Provisioner}, &storagev1.CSIDriver{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// annotateDataVolume records CDI's decisions on the DataVolume, as CDI does.
func (s *sim) annotateDataVolume(ctx context.Context, dv *cdiv1.DataVolume, populator bool, strategy cloneStrategy) error {
	want := map[string]string{annUsePopulator: strconv.FormatBool(populator)}
	if strategy != strategyNone {
		want[annCloneType] = string(strategy)
	}
	return s.writeObject(ctx, dv, func() bool {
		changed := false
		for k, v := range want {
			if dv.Annotations[k] != v {
				if dv.Annotations == nil {
					dv.Annotations = map[string]string{}
				}
				dv.Annotations[k] = v
				changed = true
			}
		}
		return changed
	})
}

// newClaim builds the PVC CDI creates for a DataVolume: same name and namespace, controlled
// by it, carrying its labels and annotations plus CDI's own.
func newClaim(dv *cdiv1.DataVolume, spec *corev1.PersistentVolumeClaimSpec, op operation, populator bool, strategy cloneStrategy) *corev1.PersistentVolumeClaim {
	labels := map[string]string{
		"app":                          "containerized-data-importer",
		"app.kubernetes.io/managed-by": "cdi-controller",
		"app.kubernetes.io/component":  "storage",
	}
	if volumeModeOf(spec.VolumeMode) == corev1.PersistentVolumeFilesystem {
		labels["alerts.k8s.io/KubePersistentVolumeFillingUp"] = "disabled"
	}
	maps.Copy(labels, dv.Labels)
	ann := maps.Clone(dv.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	contentType := string(dv.Spec.ContentType)
	if contentType == "" {
		contentType = string(cdiv1.DataVolumeKubeVirt)
	}
	maps.Copy(ann, map[string]string{
		annPodRestarts:   "0",
		annContentType:   contentType,
		annPreallocation: strconv.FormatBool(dv.Spec.Preallocation != nil && *dv.Spec.Preallocation),
		annCreatedForDV:  string(dv.UID),
		annUsePopulator:  strconv.FormatBool(populator),
	})
	delete(ann, "cdi.kubevirt.io/storage.populatedFor")
	if strategy != strategyNone {
		ann[annCloneType] = string(strategy)
	}
	spec = spec.DeepCopy()
	switch {
	case op == opImport && populator:
		spec.DataSourceRef = cdiSourceRef("VolumeImportSource", "volume-import-source-"+string(dv.UID))
	case op == opImport:
		ann[annImportSource] = importSourceKind(dv.Spec.Source)
	case populator:
		spec.DataSourceRef = cdiSourceRef("VolumeCloneSource", "volume-clone-source-"+string(dv.UID))
	default:
		ns, name := cloneSource(dv)
		ann[annCloneRequest] = ns + "/" + name
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: dv.Namespace, Name: dv.Name, Labels: labels, Annotations: ann,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(dv, cdiv1.SchemeGroupVersion.WithKind("DataVolume"))},
		},
		Spec: *spec,
	}
}

// cdiSourceRef points a claim at CDI's populator source object. The sim does not create
// VolumeImportSource/VolumeCloneSource objects (their CRDs are not installed); the reference
// marks the claim as populator-managed, so the provisioner leaves it to CDI.
func cdiSourceRef(kind, name string) *corev1.TypedObjectReference {
	group := cdiv1.SchemeGroupVersion.Group
	return &corev1.TypedObjectReference{APIGroup: &group, Kind: kind, Name: name}
}

func isPopulatorClaim(pvc *corev1.PersistentVolumeClaim) bool {
	ref := pvc.Spec.DataSourceRef
	return ref != nil && ref.APIGroup != nil && *ref.APIGroup == cdiv1.SchemeGroupVersion.Group
}

func importSourceKind(src *cdiv1.DataVolumeSource) string {
	switch {
	case src.HTTP != nil:
		return "http"
	case src.S3 != nil:
		return "s3"
	case src.GCS != nil:
		return "gcs"
	case src.Registry != nil:
		return "registry"
	case src.Imageio != nil:
		return "imageio"
	case src.VDDK != nil:
		return "vddk"
	}
	return "none"
}

// foreignClaim handles a claim of the DataVolume's name it does not control: the leftover of
// an earlier DataVolume of the same name is garbage (its owner is gone) and is deleted; any
// other claim is refused, as CDI does without adoption.
func (s *sim) foreignClaim(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim) error {
	if owner := metav1.GetControllerOf(pvc); owner != nil && owner.Kind == "DataVolume" && owner.UID != dv.UID {
		return s.collectOrphanClaim(ctx, client.ObjectKeyFromObject(pvc), dv.UID)
	}
	s.events.Eventf(dv, nil, corev1.EventTypeWarning, "ErrResourceExists", "Sync",
		"Resource %q already exists and is not managed by DataVolume", pvc.Name)
	return nil
}

// collectOrphanClaim plays the garbage collector for a DataVolume's claim: no
// kube-controller-manager runs, so without this a deleted DataVolume would leave its PVC
// (and PV) behind. A claim is deleted when its controlling DataVolume no longer exists
// (liveUID is the UID of a DataVolume of that name that does exist, if any).
func (s *sim) collectOrphanClaim(ctx context.Context, key types.NamespacedName, liveUID types.UID) error {
	pvc, err := s.claim(ctx, key)
	if err != nil || pvc == nil || pvc.DeletionTimestamp != nil {
		return err
	}
	owner := metav1.GetControllerOf(pvc)
	if owner == nil || owner.Kind != "DataVolume" || owner.UID == liveUID {
		return nil
	}
	if liveUID == "" {
		// Re-check against the apiserver: the cache may simply not have the DataVolume yet.
		err := s.live.Get(ctx, key, &cdiv1.DataVolume{})
		if err == nil || !apierrors.IsNotFound(err) {
			return client.IgnoreNotFound(err)
		}
	}
	s.clock.forget(owner.UID)
	background := metav1.DeletePropagationBackground
	uid := pvc.UID
	err = s.Delete(ctx, pvc, &client.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &background})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting PVC %s of deleted DataVolume: %w", key, err)
	}
	return nil
}
