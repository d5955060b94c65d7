package adopt

import (
	"context"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Collect lists what Plan needs: every Service and DataVolume of the tenant's infra namespace,
// every Service and PV of the tenant. Live reads (no cache): adoption runs once, by hand.
func Collect(ctx context.Context, infraClient, tenantClient client.Reader, scope infra.Scope) (Inventory, error) {
	var inv Inventory
	var svcs corev1.ServiceList
	if err := infraClient.List(ctx, &svcs, client.InNamespace(scope.Namespace)); err != nil {
		return inv, fmt.Errorf("listing infra Services in %s: %w", scope.Namespace, err)
	}
	var dvs cdiv1.DataVolumeList
	if err := infraClient.List(ctx, &dvs, client.InNamespace(scope.Namespace)); err != nil {
		return inv, fmt.Errorf("listing DataVolumes in %s: %w", scope.Namespace, err)
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := infraClient.List(ctx, &pvcs, client.InNamespace(scope.Namespace)); err != nil {
		return inv, fmt.Errorf("listing claims in %s: %w", scope.Namespace, err)
	}
	inv.Claims = pvcs.Items
	var tsvcs corev1.ServiceList
	if err := tenantClient.List(ctx, &tsvcs); err != nil {
		return inv, fmt.Errorf("listing tenant Services: %w", err)
	}
	var pvs corev1.PersistentVolumeList
	if err := tenantClient.List(ctx, &pvs); err != nil {
		return inv, fmt.Errorf("listing tenant PVs: %w", err)
	}
	inv.InfraServices, inv.DataVolumes, inv.TenantServices, inv.TenantPVs = svcs.Items, dvs.Items, tsvcs.Items, pvs.Items
	return inv, nil
}

// Apply marks every Claim item of plan, one object at a time. Each patch carries the
// resourceVersion Plan saw, so an object that changed since it was listed (and so since its
// ownership was proven) is not marked: Apply stops with that error and a new run (Collect,
// Plan, Apply) decides again. Items already marked count as done, so a run cut short (a crash,
// a conflict) is finished by running again. It returns how many objects it marked.
func Apply(ctx context.Context, c client.Client, scope infra.Scope, plan []Item) (int, error) {
	n := 0
	for _, it := range plan {
		if it.Verdict != Claim {
			continue
		}
		if it.first != nil {
			if err := mark(ctx, c, scope, *it.first); err != nil {
				return n, err
			}
		}
		if err := mark(ctx, c, scope, it); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// mark adds the item's marks to the object as it was listed.
func mark(ctx context.Context, c client.Client, scope infra.Scope, it Item) error {
	obj, err := listed(it, scope)
	if err != nil {
		return err
	}
	patch := client.MergeFromWithOptions(obj.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
	l := obj.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, it.labels)
	obj.SetLabels(l)
	obj.SetAnnotations(it.annotations)
	if err := c.Patch(ctx, obj, patch); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return fmt.Errorf("%s %s/%s changed since it was listed; run again to decide anew: %w", it.Kind, scope.Namespace, it.Name, err)
		}
		return fmt.Errorf("marking %s %s/%s: %w", it.Kind, scope.Namespace, it.Name, err)
	}
	return nil
}

// listed is the object of a Claim item as Plan saw it, with only what the merge patch needs:
// the patch adds labels and annotations (it never removes the ones already there, since the
// original's annotations are not part of the patch base) and carries the resourceVersion.
func listed(it Item, scope infra.Scope) (client.Object, error) {
	meta := metav1.ObjectMeta{Namespace: scope.Namespace, Name: it.Name, UID: it.obj.uid,
		ResourceVersion: it.obj.resourceVersion, Labels: maps.Clone(it.obj.labels)}
	switch it.Kind {
	case KindService:
		return &corev1.Service{ObjectMeta: meta}, nil
	case KindDataVolume:
		return &cdiv1.DataVolume{ObjectMeta: meta}, nil
	case KindClaim:
		return &corev1.PersistentVolumeClaim{ObjectMeta: meta}, nil
	}
	return nil, fmt.Errorf("unknown kind %q", it.Kind)
}

// Adopted lists the infra objects adopted for scope (both kinds), for Rollback and reports.
func Adopted(ctx context.Context, c client.Reader, scope infra.Scope) ([]client.Object, error) {
	owned := client.MatchingLabels{infra.LabelClusterName: scope.ClusterName, infra.LabelManagedBy: infra.ManagedByValue}
	var svcs corev1.ServiceList
	if err := c.List(ctx, &svcs, client.InNamespace(scope.Namespace), owned); err != nil {
		return nil, fmt.Errorf("listing infra Services in %s: %w", scope.Namespace, err)
	}
	var dvs cdiv1.DataVolumeList
	if err := c.List(ctx, &dvs, client.InNamespace(scope.Namespace), owned); err != nil {
		return nil, fmt.Errorf("listing DataVolumes in %s: %w", scope.Namespace, err)
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := c.List(ctx, &pvcs, client.InNamespace(scope.Namespace), client.MatchingLabels{infra.LabelClusterName: scope.ClusterName}); err != nil {
		return nil, fmt.Errorf("listing claims in %s: %w", scope.Namespace, err)
	}
	var out []client.Object
	for i := range pvcs.Items {
		// Claims carry only the cluster's name and the adoption marks, not Owns' marks.
		if pvc := &pvcs.Items[i]; adoptedClaim(pvc, scope) {
			out = append(out, pvc)
		}
	}
	for i := range svcs.Items {
		if scope.Adopted(&svcs.Items[i], infra.AdoptedFromCCM) {
			out = append(out, &svcs.Items[i])
		}
	}
	for i := range dvs.Items {
		if scope.Adopted(&dvs.Items[i], infra.AdoptedFromCSI) {
			out = append(out, &dvs.Items[i])
		}
	}
	return out, nil
}

// Release removes what adoption added to obj (the labels it listed as added, every
// tenantcloud.io annotation), handing it back to the upstream component: the rollback. The
// ccm and csi-controller must be stopped first, or they would take it for a missing object
// and create their own.
func Release(ctx context.Context, c client.Client, obj client.Object) error {
	patch := client.MergeFromWithOptions(obj.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
	ann := maps.Clone(obj.GetAnnotations())
	l := maps.Clone(obj.GetLabels())
	for _, k := range strings.Split(ann[AnnotationAddedLabels], ",") {
		if k != "" {
			delete(l, k)
		}
	}
	for k := range ann {
		if strings.HasPrefix(k, "tenantcloud.io/") {
			delete(ann, k)
		}
	}
	obj.SetLabels(l)
	obj.SetAnnotations(ann)
	if err := c.Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("releasing %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// adoptedClaim reports whether pvc is the claim of a DataVolume adopted for scope.
func adoptedClaim(pvc *corev1.PersistentVolumeClaim, scope infra.Scope) bool {
	ann := pvc.Annotations
	return pvc.Namespace == scope.Namespace && pvc.Labels[infra.LabelClusterName] == scope.ClusterName &&
		ann[infra.AnnotationCluster] == scope.ClusterName && ann[infra.AnnotationAdoptedFrom] == infra.AdoptedFromCSI &&
		ann[infra.AnnotationAdoptedUID] == string(pvc.UID)
}
