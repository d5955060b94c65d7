package infra

import "sigs.k8s.io/controller-runtime/pkg/client"

// Marks of infra objects adopted from the upstream KubeVirt cloud provider and CSI driver (see
// pkg/adopt and docs/migration.md). Adoption adds the ownership marks of Scope.Owns to an object
// the upstream component created, plus these two annotations. They tie the adoption to that
// one object: a copy of the marks on another object (or on a re-created one of the same name)
// does not carry its UID and is not adopted.
const (
	// AnnotationAdoptedFrom names the upstream component the object was taken over from.
	AnnotationAdoptedFrom = "tenantcloud.io/adopted-from"
	// AnnotationAdoptedUID is the object's own UID at adoption.
	AnnotationAdoptedUID = "tenantcloud.io/adopted-uid"

	// AdoptedFromCCM marks infra Services kubevirt/cloud-provider-kubevirt created.
	AdoptedFromCCM = "cloud-provider-kubevirt"
	// AdoptedFromCSI marks DataVolumes kubevirt/csi-driver (csi.kubevirt.io) created.
	AdoptedFromCSI = "csi.kubevirt.io"
)

// Adopted reports whether obj is an object of this tenant that was adopted from the upstream
// component from: owned (Scope.Owns) and marked as adopted from it, with its own UID.
func (s Scope) Adopted(obj client.Object, from string) bool {
	ann := obj.GetAnnotations()
	return s.Owns(obj) && ann[AnnotationAdoptedFrom] == from && obj.GetUID() != "" &&
		ann[AnnotationAdoptedUID] == string(obj.GetUID())
}
