package cdi

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// Reasons CDI uses on DataVolume conditions and events.
const (
	reasonBound              = "Bound"
	reasonPending            = "Pending"
	reasonNotFound           = "NotFound"
	reasonClaimNotValid      = "ErrClaimNotValid"
	reasonCloneWithoutSource = "CloneWithoutSource"
	reasonCloneValidation    = "CloneValidationFailed"
	reasonTransferRunning    = "TransferRunning"
	reasonPodRunning         = "Pod is running"
	reasonCompleted          = "Completed"
	reasonError              = "Error"
	// reasonNotSimulated is the simulator's own: a DataVolume it cannot play.
	reasonNotSimulated = "NotSimulated"
)

// setCondition updates or appends a condition the way CDI's updateCondition does: the
// transition time moves only when the status changes, the heartbeat on any change.
func setCondition(conds []cdiv1.DataVolumeCondition, t cdiv1.DataVolumeConditionType, status corev1.ConditionStatus, reason, message string) []cdiv1.DataVolumeCondition {
	now := metav1.Now()
	for i := range conds {
		c := &conds[i]
		if c.Type != t {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime, c.LastHeartbeatTime = now, now
		} else if c.Reason != reason || c.Message != message {
			c.LastHeartbeatTime = now
		}
		c.Status, c.Reason, c.Message = status, reason, message
		return conds
	}
	return append(conds, cdiv1.DataVolumeCondition{
		Type: t, Status: status, Reason: reason, Message: message, LastTransitionTime: now, LastHeartbeatTime: now,
	})
}

func findCondition(conds []cdiv1.DataVolumeCondition, t cdiv1.DataVolumeConditionType) *cdiv1.DataVolumeCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// running is the Running condition's view of the transfer pod.
type running struct {
	status          corev1.ConditionStatus
	reason, message string
}

var (
	notRunning = running{status: corev1.ConditionFalse}
	podRunning = running{status: corev1.ConditionTrue, reason: reasonPodRunning}
)

// updateConditions sets Bound, Ready and Running as CDI's updateConditions does. With no
// claim, Bound carries reason/message (why there is none); Ready is True only in Succeeded.
func updateConditions(dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, reason, message string, run running) {
	c := dv.Status.Conditions
	if c == nil {
		c = []cdiv1.DataVolumeCondition{}
	}
	switch {
	case pvc == nil:
		if reason == "" {
			reason, message = reasonNotFound, "No PVC found"
		}
		c = setCondition(c, cdiv1.DataVolumeBound, corev1.ConditionFalse, reason, message)
	case pvc.Status.Phase == corev1.ClaimBound:
		c = setCondition(c, cdiv1.DataVolumeBound, corev1.ConditionTrue, reasonBound, fmt.Sprintf("PVC %s Bound", pvc.Name))
	case pvc.Status.Phase == corev1.ClaimPending || pvc.Status.Phase == "":
		c = setCondition(c, cdiv1.DataVolumeBound, corev1.ConditionFalse, reasonPending, fmt.Sprintf("PVC %s Pending", pvc.Name))
	default:
		c = setCondition(c, cdiv1.DataVolumeBound, corev1.ConditionFalse, "ClaimLost", "Claim Lost")
	}
	switch {
	case dv.Status.Phase == cdiv1.Succeeded:
		c = setCondition(c, cdiv1.DataVolumeReady, corev1.ConditionTrue, "", "")
	case run.status == corev1.ConditionTrue:
		c = setCondition(c, cdiv1.DataVolumeReady, corev1.ConditionFalse, reasonTransferRunning, "")
	case pvc == nil:
		c = setCondition(c, cdiv1.DataVolumeReady, corev1.ConditionFalse, reason, message)
	default:
		c = setCondition(c, cdiv1.DataVolumeReady, corev1.ConditionFalse, "", "")
	}
	c = setCondition(c, cdiv1.DataVolumeRunning, run.status, run.reason, run.message)
	dv.Status.Conditions = c
}
