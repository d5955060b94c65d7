package cdi

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// Default StorageClass annotations, in the order CDI consults them for kubevirt content.
const (
	annDefaultVirtClass = "storageclass.kubevirt.io/is-default-virt-class"
	annDefaultClass     = "storageclass.kubernetes.io/is-default-class"
)

// messageStorageClassNotFound is CDI's MessageErrStorageClassNotFound, verbatim: CDI does not
// name the class, because the same path covers "no class named" and "no default class".
const messageStorageClassNotFound = "PVC spec is missing accessMode and no storageClass to choose profile"

// claimNotValidError is a DataVolume spec CDI cannot turn into a PVC. CDI leaves the phase
// unset, sets Bound=False with reason ErrClaimNotValid and this message, and waits for the
// spec or the StorageClasses to change.
type claimNotValidError struct{ msg string }

func (e *claimNotValidError) Error() string { return e.msg }

func claimNotValid(format string, args ...any) error {
	return &claimNotValidError{msg: fmt.Sprintf(format, args...)}
}

// claimPropertySet is one entry of a StorageProfile's status.claimPropertySets.
type claimPropertySet struct {
	accessModes []corev1.PersistentVolumeAccessMode
	volumeMode  corev1.PersistentVolumeMode
}

// profileFor is the StorageProfile CDI derives for a class. CDI's capabilities table
// (pkg/storagecapabilities) lists linstor.csi.linbit.com as "all but RWX filesystem", RWX Block
// first; classes of provisioners it does not know get an empty (incomplete) profile.
func profileFor(sc *storagev1.StorageClass) []claimPropertySet {
	if sc.Provisioner != Driver {
		return nil
	}
	rwx, rwo, rox := corev1.ReadWriteMany, corev1.ReadWriteOnce, corev1.ReadOnlyMany
	block, fs := corev1.PersistentVolumeBlock, corev1.PersistentVolumeFilesystem
	return []claimPropertySet{
		{[]corev1.PersistentVolumeAccessMode{rwx}, block},
		{[]corev1.PersistentVolumeAccessMode{rwo}, block},
		{[]corev1.PersistentVolumeAccessMode{rwo}, fs},
		{[]corev1.PersistentVolumeAccessMode{rox}, block},
		{[]corev1.PersistentVolumeAccessMode{rox}, fs},
	}
}

// resolveClass finds the class a claim uses: by name, or for a nil name the newest class
// annotated as the KubeVirt default, then the newest Kubernetes default (ties by name), as
// CDI's GetStorageClassByNameWithVirtFallback does. nil means none.
func resolveClass(name *string, classes []storagev1.StorageClass) *storagev1.StorageClass {
	if name != nil {
		for i := range classes {
			if classes[i].Name == *name {
				return &classes[i]
			}
		}
		return nil
	}
	for _, ann := range []string{annDefaultVirtClass, annDefaultClass} {
		var defaults []storagev1.StorageClass
		for _, sc := range classes {
			if sc.Annotations[ann] == "true" {
				defaults = append(defaults, sc)
			}
		}
		if len(defaults) == 0 {
			continue
		}
		sort.Slice(defaults, func(i, j int) bool {
			ti, tj := defaults[i].CreationTimestamp, defaults[j].CreationTimestamp
			if ti.Equal(&tj) {
				return defaults[i].Name < defaults[j].Name
			}
			return tj.Before(&ti)
		})
		return &defaults[0]
	}
	return nil
}

// renderPVCSpec is the PVC spec CDI creates for dv, and the class it resolved (nil if none).
// spec.pvc is taken verbatim; spec.storage gets the class, access and volume modes from the
// StorageProfile, and the filesystem overhead, as CDI's renderPvcSpec does.
func renderPVCSpec(dv *cdiv1.DataVolume, classes []storagev1.StorageClass) (*corev1.PersistentVolumeClaimSpec, *storagev1.StorageClass, error) {
	if dv.Spec.PVC != nil {
		spec := dv.Spec.PVC.DeepCopy()
		return spec, resolveClass(spec.StorageClassName, classes), nil
	}
	if dv.Spec.Storage == nil {
		return nil, nil, errors.New("datavolume one of {pvc, storage} field is required")
	}
	st := dv.Spec.Storage.DeepCopy()
	spec := &corev1.PersistentVolumeClaimSpec{
		AccessModes:      st.AccessModes,
		Selector:         st.Selector,
		Resources:        st.Resources,
		VolumeName:       st.VolumeName,
		StorageClassName: st.StorageClassName,
		VolumeMode:       st.VolumeMode,
		DataSource:       st.DataSource,
		DataSourceRef:    st.DataSourceRef,
	}
	sc := resolveClass(spec.StorageClassName, classes)
	if err := applyProfile(spec, sc); err != nil {
		return nil, sc, err
	}
	return spec, sc, renderSize(spec, isClone(dv))
}

// applyProfile fills access and volume modes the DataVolume left out.
func applyProfile(spec *corev1.PersistentVolumeClaimSpec, sc *storagev1.StorageClass) error {
	if sc == nil {
		// With access modes given, CDI creates the claim anyway, naming the missing class; it
		// then stays Pending until the class exists.
		if len(spec.AccessModes) == 0 {
			return claimNotValid("%s", messageStorageClassNotFound)
		}
		return nil
	}
	spec.StorageClassName = &sc.Name
	profile := profileFor(sc)
	hasMode := spec.VolumeMode != nil && *spec.VolumeMode != ""
	switch {
	case !hasMode && len(spec.AccessModes) == 0:
		if len(profile) == 0 {
			return claimNotValid("no accessMode specified in StorageProfile %s", sc.Name)
		}
		spec.AccessModes = slices.Clone(profile[0].accessModes)
		mode := profile[0].volumeMode
		spec.VolumeMode = &mode
	case len(spec.AccessModes) == 0:
		for _, cps := range profile {
			if cps.volumeMode == *spec.VolumeMode {
				spec.AccessModes = slices.Clone(cps.accessModes)
				return nil
			}
		}
		return claimNotValid("no matching accessMode specified in StorageProfile %s", sc.Name)
	case !hasMode:
		// The first property set sharing an access mode decides; none leaves the
		// apiserver's default (Filesystem).
		for _, cps := range profile {
			if slices.ContainsFunc(cps.accessModes, func(m corev1.PersistentVolumeAccessMode) bool {
				return slices.Contains(spec.AccessModes, m)
			}) {
				mode := cps.volumeMode
				spec.VolumeMode = &mode
				return nil
			}
		}
	}
	return nil
}

// renderSize applies CDI's minimum and filesystem overhead to the storage request. Clones may
// leave the size out; it is then taken from the source later.
func renderSize(spec *corev1.PersistentVolumeClaimSpec, clone bool) error {
	req, ok := spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		if !clone {
			return claimNotValid("PVC Spec is not valid - missing storage size")
		}
		return nil
	}
	if req.Value() < cdiMinBytes {
		return claimNotValid("PVC Spec is not valid - storage size should be at least 1MiB")
	}
	size := cdiInflatedSize(req.Value(), volumeModeOf(spec.VolumeMode))
	spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}
	return nil
}

func isClone(dv *cdiv1.DataVolume) bool {
	return dv.Spec.Source != nil && (dv.Spec.Source.PVC != nil || dv.Spec.Source.Snapshot != nil)
}
