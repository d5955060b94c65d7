package autoscaler

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	capierrors "sigs.k8s.io/cluster-api/api/deprecated/errors"
)

func TestInstanceFor(t *testing.T) {
	now := metav1.Now()
	reason, msg := "CreateError", "no capacity left on host"
	machine := func(mut func(*clusterv1.Machine)) *clusterv1.Machine {
		m := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "m-1"}}
		m.Spec.ProviderID = "kubevirt://vm-1"
		mut(m)
		return m
	}
	tests := []struct {
		name       string
		m          *clusterv1.Machine
		registered bool
		wantID     string
		wantState  protos.InstanceStatus_InstanceState
		wantErr    string // substring of the error message; "" = no error info
	}{
		{"running", machine(func(*clusterv1.Machine) {}), true, "kubevirt://vm-1", protos.InstanceStatus_instanceRunning, ""},
		{"no node yet", machine(func(*clusterv1.Machine) {}), false, "kubevirt://vm-1", protos.InstanceStatus_instanceCreating, ""},
		{"no providerID yet", machine(func(m *clusterv1.Machine) { m.Spec.ProviderID = "" }), false,
			"clusterapi-machine://tenant-a/m-1", protos.InstanceStatus_instanceCreating, ""},
		{"deleting", machine(func(m *clusterv1.Machine) { m.DeletionTimestamp = &now }), true, "kubevirt://vm-1", protos.InstanceStatus_instanceDeleting, ""},
		{"failed phase", machine(func(m *clusterv1.Machine) {
			m.Status.Phase = "Failed"
			m.Status.Conditions = []metav1.Condition{{Type: "InfrastructureReady", Status: metav1.ConditionFalse, Message: "VM did not boot"}}
		}), false, "kubevirt://vm-1", protos.InstanceStatus_instanceCreating, "VM did not boot"},
		{"failure message", machine(func(m *clusterv1.Machine) {
			m.Status.Deprecated = &clusterv1.MachineDeprecatedStatus{V1Beta1: &clusterv1.MachineV1Beta1DeprecatedStatus{
				FailureReason: ptrTo(capierrors.MachineStatusError(reason)), FailureMessage: &msg}}
		}), true, "kubevirt://vm-1", protos.InstanceStatus_instanceCreating, "CreateError: no capacity left on host"},
		{"failed without detail", machine(func(m *clusterv1.Machine) { m.Status.Phase = "Failed" }), false,
			"kubevirt://vm-1", protos.InstanceStatus_instanceCreating, "phase Failed"},
		{"failed and deleting", machine(func(m *clusterv1.Machine) { m.Status.Phase = "Failed"; m.DeletionTimestamp = &now }), false,
			"kubevirt://vm-1", protos.InstanceStatus_instanceDeleting, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := InstanceFor(tt.m, tt.registered)
			if got.GetId() != tt.wantID || got.GetStatus().GetInstanceState() != tt.wantState {
				t.Fatalf("got %q %v, want %q %v", got.GetId(), got.GetStatus().GetInstanceState(), tt.wantID, tt.wantState)
			}
			ei := got.GetStatus().GetErrorInfo()
			if tt.wantErr == "" {
				if ei != nil {
					t.Fatalf("unexpected error info %s", show(ei))
				}
				return
			}
			if ei.GetErrorCode() != ErrorCodeMachineFailed || ei.GetInstanceErrorClass() != ErrorClassOther ||
				!strings.Contains(ei.GetErrorMessage(), tt.wantErr) {
				t.Fatalf("error info %s, want message containing %q", show(ei), tt.wantErr)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
