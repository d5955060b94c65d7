package cdi

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// sourceError is a clone source that is missing or unusable; CDI reports it on the Bound
// condition and an event and keeps the phase.
type sourceError struct{ reason, msg string }

func (e *sourceError) Error() string { return e.msg }

func cloneSource(dv *cdiv1.DataVolume) (namespace, name string) {
	switch src := dv.Spec.Source; {
	case src.PVC != nil:
		namespace, name = src.PVC.Namespace, src.PVC.Name
	case src.Snapshot != nil:
		namespace, name = src.Snapshot.Namespace, src.Snapshot.Name
	}
	if namespace == "" {
		namespace = dv.Namespace
	}
	return namespace, name
}

func sourceClaimKey(dv *cdiv1.DataVolume) types.NamespacedName {
	ns, name := cloneSource(dv)
	return types.NamespacedName{Namespace: ns, Name: name}
}

func sourceSnapshotKey(dv *cdiv1.DataVolume) types.NamespacedName { return sourceClaimKey(dv) }

// validateCloneSize is CDI's ValidateRequestedCloneSize.
func validateCloneSize(source, target resource.Quantity) error {
	if source.Cmp(target) > 0 {
		return &sourceError{reason: reasonCloneValidation, msg: fmt.Sprintf(
			"The clone doesn't meet the validation requirements: target resources requests storage size is smaller than the source %d < %d",
			target.Value(), source.Value())}
	}
	return nil
}

func setRequest(spec *corev1.PersistentVolumeClaimSpec, q resource.Quantity) {
	spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: q}
}

// prepareClonePVC checks the source claim, fills a missing size and picks the strategy.
func (s *sim) prepareClonePVC(ctx context.Context, dv *cdiv1.DataVolume, spec *corev1.PersistentVolumeClaimSpec,
	sc *storagev1.StorageClass, populator bool) (cloneStrategy, error) {
	src, err := s.claim(ctx, sourceClaimKey(dv))
	if err != nil {
		return strategyNone, err
	}
	if src == nil {
		return strategyNone, &sourceError{reason: reasonCloneWithoutSource,
			msg: fmt.Sprintf("The source pvc %s doesn't exist", dv.Spec.Source.PVC.Name)}
	}
	srcReq := src.Spec.Resources.Requests[corev1.ResourceStorage]
	if _, ok := spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		size := srcReq
		if c, ok := src.Status.Capacity[corev1.ResourceStorage]; ok &&
			(volumeModeOf(src.Spec.VolumeMode) != volumeModeOf(spec.VolumeMode) || ptrValue(src.Spec.StorageClassName) != ptrValue(spec.StorageClassName)) {
			size = c
		}
		setRequest(spec, size)
	}
	if err := validateCloneSize(srcReq, spec.Resources.Requests[corev1.ResourceStorage]); err != nil {
		return strategyNone, err
	}
	if !populator {
		return strategyHostAssisted, nil
	}
	srcClass, err := s.class(ctx, src.Spec.StorageClassName)
	if err != nil {
		return strategyNone, err
	}
	drivers, err := s.snapshotClassDrivers(ctx)
	if err != nil {
		return strategyNone, err
	}
	return cloneFromPVCStrategy(src, srcClass, sc, spec, drivers), nil
}

// prepareCloneSnapshot checks the source snapshot (CDI's IsSnapshotValidForClone), fills a
// missing size from its restore size and picks the strategy.
func (s *sim) prepareCloneSnapshot(ctx context.Context, dv *cdiv1.DataVolume, spec *corev1.PersistentVolumeClaimSpec,
	sc *storagev1.StorageClass, populator bool) (cloneStrategy, error) {
	snap, err := s.snapshot(ctx, sourceSnapshotKey(dv))
	if err != nil {
		return strategyNone, err
	}
	invalid := func(msg string) error {
		return &sourceError{reason: reasonCloneValidation, msg: "The clone doesn't meet the validation requirements: " + msg}
	}
	switch {
	case snap == nil:
		return strategyNone, &sourceError{reason: reasonCloneWithoutSource,
			msg: fmt.Sprintf("The source snapshot %s doesn't exist", dv.Spec.Source.Snapshot.Name)}
	case !snap.hasStatus():
		return strategyNone, invalid("no status on source snapshot yet")
	case snap.errorMessage() != "":
		return strategyNone, invalid("snapshot in error state with msg: " + snap.errorMessage())
	case snap.className() == "":
		return strategyNone, invalid(fmt.Sprintf("snapshot %s/%s does not have volume snap class populated, can't clone", snap.GetName(), snap.GetNamespace()))
	}
	restore, ok := snap.restoreSize()
	if !ok {
		return strategyNone, invalid("snapshot has no restore size")
	}
	if _, ok := spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		setRequest(spec, restore)
	}
	if err := validateCloneSize(restore, spec.Resources.Requests[corev1.ResourceStorage]); err != nil {
		return strategyNone, err
	}
	if !populator {
		return strategyHostAssisted, nil
	}
	driver, mode, err := s.snapshotSource(ctx, snap)
	if err != nil {
		return strategyNone, err
	}
	return cloneFromSnapshotStrategy(driver, mode, restore.Value(), sc, spec), nil
}

func ptrValue(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
