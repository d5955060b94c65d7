package cdi

import (
	"context"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// setStatus writes phase, claim name, progress and conditions, and emits the events CDI
// emits: one for the phase change and one when the Bound condition changes.
func (s *sim) setStatus(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim,
	phase cdiv1.DataVolumePhase, run running, reason, message string) error {
	var before, after cdiv1.DataVolumeStatus
	err := s.writeStatus(ctx, dv, func() bool {
		before = *dv.Status.DeepCopy()
		dv.Status.Phase = phase
		if pvc != nil {
			dv.Status.ClaimName = pvc.Name
		}
		switch {
		case phase == cdiv1.Succeeded:
			dv.Status.Progress = "100.0%"
		case dv.Status.Progress == "" && phase != cdiv1.PhaseUnset:
			dv.Status.Progress = "N/A"
		}
		updateConditions(dv, pvc, reason, message, run)
		after = dv.Status
		return !reflect.DeepEqual(before, after)
	})
	if err != nil {
		return fmt.Errorf("updating status of DataVolume %s/%s: %w", dv.Namespace, dv.Name, err)
	}
	if before.Phase != after.Phase {
		if t, r, m := phaseEvent(dv, after.Phase); r != "" {
			s.events.Eventf(dv, nil, t, r, "PhaseChange", "%s", m)
		}
	}
	b, a := findCondition(before.Conditions, cdiv1.DataVolumeBound), findCondition(after.Conditions, cdiv1.DataVolumeBound)
	if a != nil && (b == nil || b.Status != a.Status || b.Reason != a.Reason || b.Message != a.Message) {
		typ := corev1.EventTypeNormal
		switch a.Reason {
		case reasonClaimNotValid, reasonCloneWithoutSource, reasonCloneValidation, reasonNotSimulated:
			typ = corev1.EventTypeWarning
		}
		s.events.Eventf(dv, nil, typ, a.Reason, "Bound", "%s", a.Message)
	}
	return nil
}

// phaseEvent is the event CDI emits on entering a phase (import- and clone-controller).
func phaseEvent(dv *cdiv1.DataVolume, phase cdiv1.DataVolumePhase) (typ, reason, msg string) {
	n := corev1.EventTypeNormal
	if operationOf(dv) == opImport {
		switch phase {
		case cdiv1.ImportScheduled:
			return n, "ImportScheduled", fmt.Sprintf("Import into %s scheduled", dv.Name)
		case cdiv1.ImportInProgress:
			return n, "ImportInProgress", fmt.Sprintf("Import into %s in progress", dv.Name)
		case cdiv1.Succeeded:
			return n, "ImportSucceeded", fmt.Sprintf("Successfully imported into PVC %s", dv.Name)
		}
		return "", "", ""
	}
	if !isClone(dv) {
		return "", "", ""
	}
	ns, name := cloneSource(dv)
	kind := "pvc"
	if dv.Spec.Source.Snapshot != nil {
		kind = "snapshot"
	}
	switch phase {
	case cdiv1.CloneScheduled:
		return n, "CloneScheduled", fmt.Sprintf("Cloning from %s/%s into %s/%s scheduled", ns, name, dv.Namespace, dv.Name)
	case cdiv1.CloneInProgress:
		return n, "CloneInProgress", fmt.Sprintf("Cloning from %s/%s into %s/%s in progress", ns, name, dv.Namespace, dv.Name)
	case cdiv1.SnapshotForSmartCloneInProgress:
		return n, "SnapshotForSmartCloneInProgress", fmt.Sprintf("Creating snapshot for smart-clone is in progress (for pvc %s/%s)", ns, name)
	case cdiv1.CloneFromSnapshotSourceInProgress:
		return n, "CloneFromSnapshotSourceInProgress", fmt.Sprintf("Creating PVC from snapshot source is in progress (for %s %s/%s)", kind, ns, name)
	case cdiv1.Succeeded:
		return n, "CloneSucceeded", fmt.Sprintf("Successfully cloned from %s/%s into %s/%s", ns, name, dv.Namespace, dv.Name)
	}
	return "", "", ""
}

// dataVolumesForClaim maps a claim to the DataVolume of its name (its owner, or the one
// whose claim it would be) and to DataVolumes cloning from it.
func (s *sim) dataVolumesForClaim(ctx context.Context, obj client.Object) []reconcile.Request {
	reqs := []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(obj)}}
	return append(reqs, s.dataVolumesMatching(ctx, func(dv *cdiv1.DataVolume) bool {
		return dv.Spec.Source != nil && dv.Spec.Source.PVC != nil && sourceClaimKey(dv) == client.ObjectKeyFromObject(obj)
	})...)
}

func (s *sim) dataVolumesForSnapshot(ctx context.Context, obj client.Object) []reconcile.Request {
	return s.dataVolumesMatching(ctx, func(dv *cdiv1.DataVolume) bool {
		return dv.Spec.Source != nil && dv.Spec.Source.Snapshot != nil && sourceSnapshotKey(dv) == client.ObjectKeyFromObject(obj)
	})
}

// unfinishedDataVolumes are those a new or changed StorageClass may unblock.
func (s *sim) unfinishedDataVolumes(ctx context.Context, _ client.Object) []reconcile.Request {
	return s.dataVolumesMatching(ctx, func(dv *cdiv1.DataVolume) bool { return dv.Status.Phase != cdiv1.Succeeded })
}

func (s *sim) dataVolumesMatching(ctx context.Context, match func(*cdiv1.DataVolume) bool) []reconcile.Request {
	var list cdiv1.DataVolumeList
	if err := s.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if match(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
		}
	}
	return reqs
}
