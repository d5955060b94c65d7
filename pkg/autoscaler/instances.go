package autoscaler

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// Instance error reporting. The class values are cluster-autoscaler's
// cloudprovider.InstanceErrorClass; the proto carries them as plain integers.
const (
	ErrorClassOutOfResources int32 = 1
	ErrorClassOther          int32 = 99

	// ErrorCodeMachineFailed marks a Machine Cluster API gave up on.
	ErrorCodeMachineFailed = "MachineFailed"
)

// InstanceID is the id cluster-autoscaler knows Machine m by: its providerID, byte for byte,
// because the autoscaler matches it against the tenant Node's spec.providerID to decide whether
// the instance registered; or, before the infrastructure provider set one, a pending id that
// still leads back to the Machine.
func InstanceID(m *clusterv1.Machine) string {
	if m.Spec.ProviderID != "" {
		return m.Spec.ProviderID
	}
	return PendingInstanceID(m.Namespace, m.Name)
}

// InstanceFor describes Machine m for NodeGroupNodes; registered says whether a tenant Node
// exists for it.
//
//   - being deleted → deleting;
//   - failed → creating with an error: cluster-autoscaler only acts on errors of instances that
//     are creating, and then deletes them (a fake-node DeleteNodes) and retries elsewhere, which
//     is what should happen to a Machine Cluster API will not fix by itself;
//   - registered → running; otherwise creating.
func InstanceFor(m *clusterv1.Machine, registered bool) *protos.Instance {
	st := &protos.InstanceStatus{}
	switch {
	case !m.DeletionTimestamp.IsZero():
		st.InstanceState = protos.InstanceStatus_instanceDeleting
	case MachineFailed(m):
		st.InstanceState = protos.InstanceStatus_instanceCreating
		st.ErrorInfo = &protos.InstanceErrorInfo{
			ErrorCode:          ErrorCodeMachineFailed,
			ErrorMessage:       machineFailureMessage(m),
			InstanceErrorClass: ErrorClassOther,
		}
	case registered:
		st.InstanceState = protos.InstanceStatus_instanceRunning
	default:
		st.InstanceState = protos.InstanceStatus_instanceCreating
	}
	return &protos.Instance{Id: InstanceID(m), Status: st}
}

// MachineFailed reports a Machine in the terminal Failed phase or with a failure reason.
func MachineFailed(m *clusterv1.Machine) bool {
	if m.Status.Phase == string(clusterv1.MachinePhaseFailed) {
		return true
	}
	d := m.Status.Deprecated
	return d != nil && d.V1Beta1 != nil && (d.V1Beta1.FailureReason != nil || d.V1Beta1.FailureMessage != nil)
}

// machineFailureMessage explains a failed Machine: the failure message if Cluster API kept one,
// else the first false readiness condition, else the phase.
func machineFailureMessage(m *clusterv1.Machine) string {
	if d := m.Status.Deprecated; d != nil && d.V1Beta1 != nil {
		switch {
		case d.V1Beta1.FailureMessage != nil && d.V1Beta1.FailureReason != nil:
			return fmt.Sprintf("Machine %s: %s: %s", m.Name, *d.V1Beta1.FailureReason, *d.V1Beta1.FailureMessage)
		case d.V1Beta1.FailureMessage != nil:
			return fmt.Sprintf("Machine %s: %s", m.Name, *d.V1Beta1.FailureMessage)
		case d.V1Beta1.FailureReason != nil:
			return fmt.Sprintf("Machine %s: %s", m.Name, *d.V1Beta1.FailureReason)
		}
	}
	for _, t := range []string{clusterv1.InfrastructureReadyCondition, clusterv1.BootstrapConfigReadyCondition, clusterv1.ReadyCondition} {
		for _, c := range m.Status.Conditions {
			if c.Type == t && c.Status == metav1.ConditionFalse && c.Message != "" {
				return fmt.Sprintf("Machine %s: %s: %s", m.Name, c.Type, c.Message)
			}
		}
	}
	return fmt.Sprintf("Machine %s is in phase %s", m.Name, m.Status.Phase)
}
