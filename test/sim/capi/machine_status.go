package capi

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// setMachinePhase is Cluster API's setMachinePhaseAndLastUpdated: each later rule overrides
// the earlier ones. With legacyFailed, a reported failure also means phase Failed, as before
// the v1beta2 API.
func setMachinePhase(m *clusterv1.Machine, legacyFailed bool) {
	orig := m.Status.Phase
	if m.Status.Phase == "" {
		m.Status.SetTypedPhase(clusterv1.MachinePhasePending)
	}
	bootstrapped := m.Status.Initialization.BootstrapDataSecretCreated != nil && *m.Status.Initialization.BootstrapDataSecretCreated
	provisioned := m.Status.Initialization.InfrastructureProvisioned != nil && *m.Status.Initialization.InfrastructureProvisioned
	if bootstrapped && !provisioned {
		m.Status.SetTypedPhase(clusterv1.MachinePhaseProvisioning)
	}
	if m.Spec.ProviderID != "" {
		m.Status.SetTypedPhase(clusterv1.MachinePhaseProvisioned)
	}
	if m.Status.NodeRef.Name != "" && provisioned {
		m.Status.SetTypedPhase(clusterv1.MachinePhaseRunning)
	}
	if legacyFailed && failed(m) {
		m.Status.SetTypedPhase(clusterv1.MachinePhaseFailed)
	}
	if m.DeletionTimestamp != nil {
		m.Status.SetTypedPhase(clusterv1.MachinePhaseDeleting)
	}
	if m.Status.Phase != orig {
		m.Status.LastUpdated = metav1.Now()
	}
}

func failed(m *clusterv1.Machine) bool {
	d := m.Status.Deprecated
	return d != nil && d.V1Beta1 != nil && (d.V1Beta1.FailureReason != nil || d.V1Beta1.FailureMessage != nil)
}

func setCond(m *clusterv1.Machine, t string, ok bool, reason, msg string) {
	c := metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: m.Generation}
	if ok {
		c.Status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&m.Status.Conditions, c)
}

// setMachineConditions sets the v1beta2 conditions the MachineSet counters and other
// consumers read: BootstrapConfigReady, InfrastructureReady, NodeReady, NodeHealthy,
// Deleting, Ready (all of them), Available (Ready; minReadySeconds is not simulated),
// UpToDate (no rollouts, always) and Paused.
func setMachineConditions(m *clusterv1.Machine, st machineState, paused bool) {
	meta.SetStatusCondition(&m.Status.Conditions, pausedCondition(paused, m.Generation))
	if paused {
		return
	}
	boot := m.Status.Initialization.BootstrapDataSecretCreated != nil && *m.Status.Initialization.BootstrapDataSecretCreated
	setCond(m, clusterv1.MachineBootstrapConfigReadyCondition, boot, pick(boot, "Ready", "NotReady"), "")

	infra := m.Status.Initialization.InfrastructureProvisioned != nil && *m.Status.Initialization.InfrastructureProvisioned
	infraReason, infraMsg := pick(infra, "Ready", "NotReady"), ""
	switch {
	case failed(m) && m.Status.Deprecated.V1Beta1.FailureMessage != nil:
		infraReason, infraMsg = "Failed", *m.Status.Deprecated.V1Beta1.FailureMessage
	case st.infraMissing:
		infraReason = "InfrastructureMachineDoesNotExist"
	}
	setCond(m, clusterv1.MachineInfrastructureReadyCondition, infra, infraReason, infraMsg)

	nodeReady, nodeReason := false, "NodeDoesNotExist"
	if m.Spec.ProviderID == "" {
		nodeReason = "WaitingForProviderID"
	}
	if st.node != nil {
		for _, c := range st.node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				nodeReady = c.Status == corev1.ConditionTrue
				nodeReason = map[corev1.ConditionStatus]string{corev1.ConditionTrue: "NodeReady", corev1.ConditionFalse: "NodeNotReady"}[c.Status]
				if nodeReason == "" {
					nodeReason = "NodeReadyUnknown"
				}
			}
		}
	}
	if st.node != nil || m.Status.NodeRef.Name == "" {
		setCond(m, clusterv1.MachineNodeReadyCondition, nodeReady, nodeReason, "")
		setCond(m, clusterv1.MachineNodeHealthyCondition, nodeReady, pick(nodeReady, "Healthy", "NotHealthy"), "")
	}
	healthy := meta.IsStatusConditionTrue(m.Status.Conditions, clusterv1.MachineNodeHealthyCondition)
	deleting := m.DeletionTimestamp != nil
	if !deleting {
		setCond(m, clusterv1.MachineDeletingCondition, false, "NotDeleting", "")
	}
	ready := boot && infra && healthy && !deleting
	setCond(m, clusterv1.MachineReadyCondition, ready, pick(ready, "Ready", "NotReady"), "")
	setCond(m, clusterv1.MachineAvailableCondition, ready, pick(ready, "Available", "NotReady"), "")
	setCond(m, clusterv1.MachineUpToDateCondition, true, "UpToDate", "")
}

func pick(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}
