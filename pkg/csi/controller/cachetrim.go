package controller

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// The infra cache holds every DataVolume and claim of the tenant, a thousand of each for a
// tenant with a thousand volumes, and CDI and the CO fill them with fields csi-controller never
// reads: CDI's own annotations on both (a claim carries all of its DataVolume's plus CDI's),
// the conditions of a DataVolume that went well, the claim's data source. cacheTrim drops
// those before the cache stores an object. Writes are unaffected: the controller writes
// DataVolumes and claims only as patches computed against the cached copy (a merge patch of
// the fields it changes), never as whole-object updates.

// ownAnnotationPrefix is the prefix of every annotation csi-controller reads (its own, the
// ownership marks infra.Scope checks and the adoption marks).
const ownAnnotationPrefix = "tenantcloud.io/"

// cacheTrim is the cache transform of csi-controller's infra client (after managedFields are
// dropped): DataVolumes and claims are trimmed, other objects kept as they are.
func cacheTrim(obj client.Object) {
	switch o := obj.(type) {
	case *cdiv1.DataVolume:
		trimDataVolume(o)
	case *corev1.PersistentVolumeClaim:
		trimClaim(o)
	}
}

// trimDataVolume keeps what asVolume, the waits and describeDataVolume read: labels, owner
// references, tenantcloud.io annotations, the spec's storage, the phase, claim name, restart
// count and the conditions describeDataVolume reports (not True, with a message).
func trimDataVolume(dv *cdiv1.DataVolume) {
	dv.Annotations = ownAnnotations(dv.Annotations)
	kept := dv.Status.Conditions[:0]
	for _, c := range dv.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			kept = append(kept, c)
		}
	}
	dv.Status.Conditions = kept
	if len(kept) == 0 {
		dv.Status.Conditions = nil
	}
}

// trimClaim keeps what ClaimOf, expansion and volume health read: the cluster-name label (the
// scope; claims are never listed by other labels), owner references (the controlling
// DataVolume), the requested resources and the status. A claim has no tenantcloud.io
// annotation of its own; those it carries are its DataVolume's copies.
func trimClaim(pvc *corev1.PersistentVolumeClaim) {
	if cluster, ok := pvc.Labels[infra.LabelClusterName]; ok {
		pvc.Labels = map[string]string{infra.LabelClusterName: cluster}
	} else {
		pvc.Labels = nil
	}
	pvc.Annotations = nil
	pvc.Finalizers = nil
	pvc.Spec.DataSource = nil
	pvc.Spec.DataSourceRef = nil
	pvc.Spec.Selector = nil
}

// ownAnnotations is the tenantcloud.io subset of ann (nil when there is none).
func ownAnnotations(ann map[string]string) map[string]string {
	var out map[string]string
	for k, v := range ann {
		if strings.HasPrefix(k, ownAnnotationPrefix) {
			if out == nil {
				out = make(map[string]string, 8)
			}
			out[k] = v
		}
	}
	return out
}
