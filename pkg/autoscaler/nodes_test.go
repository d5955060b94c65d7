package autoscaler_test

import (
	"strings"
	"testing"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	capierrors "sigs.k8s.io/cluster-api/api/deprecated/errors"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
)

// TestNodeGroupNodes: instance ids are the tenant Nodes' providerIDs byte for byte; states
// follow the Machines; a failed Machine carries an error so cluster-autoscaler replaces it.
func TestNodeGroupNodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.md("workers", mdOpts{replicas: 5, annotations: bounds("0", "10")})
	ms := f.ms(md, "workers-abc")
	f.machine(ms, "running", machineOpts{providerID: f.pid("vm-run"), registered: true, nodeRef: true, phase: "Running"})
	// Registered as far as the tenant is concerned, before Cluster API set the nodeRef.
	f.machine(ms, "joined", machineOpts{providerID: f.pid("vm-joined"), registered: true, phase: "Provisioned"})
	f.machine(ms, "booting", machineOpts{providerID: f.pid("vm-boot"), phase: "Provisioned"})
	f.machine(ms, "pending", machineOpts{phase: "Pending"})
	// Cluster API v1.14 no longer sets phase Failed: a terminal failure is only in the
	// deprecated v1beta1 failure fields (and conditions).
	failed := f.machine(ms, "failed", machineOpts{providerID: f.pid("vm-failed"), phase: "Provisioning"})
	failed.Status.Deprecated = &clusterv1.MachineDeprecatedStatus{V1Beta1: &clusterv1.MachineV1Beta1DeprecatedStatus{
		FailureReason: ptr(capierrors.CreateMachineError), FailureMessage: ptr("VM never started")}}
	if err := f.mgmt.Status().Update(f.ctx, failed); err != nil {
		t.Fatal(err)
	}
	deleting := f.machine(ms, "deleting", machineOpts{providerID: f.pid("vm-del"), registered: true, nodeRef: true,
		mutate: func(m *clusterv1.Machine) { m.Finalizers = []string{"test.tenantcloud.io/hold"} }})
	if err := f.mgmt.Delete(f.ctx, deleting); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.releaseFinalizers(deleting) })
	// Another group's Machine must not appear.
	other := f.md("others", mdOpts{replicas: 1, annotations: bounds("0", "5")})
	f.machine(f.ms(other, "others-abc"), "other", machineOpts{providerID: f.pid("vm-other")})
	cl := f.start()

	resp, err := cl.NodeGroupNodes(f.ctx, &protos.NodeGroupNodesRequest{Id: f.group("workers")})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		state   protos.InstanceStatus_InstanceState
		errText string
	}
	wants := map[string]want{
		f.pid("vm-run"):    {protos.InstanceStatus_instanceRunning, ""},
		f.pid("vm-joined"): {protos.InstanceStatus_instanceRunning, ""},
		f.pid("vm-boot"):   {protos.InstanceStatus_instanceCreating, ""},
		autoscaler.PendingInstanceID(f.ns, "pending"): {protos.InstanceStatus_instanceCreating, ""},
		f.pid("vm-failed"):                            {protos.InstanceStatus_instanceCreating, "CreateError: VM never started"},
		f.pid("vm-del"):                               {protos.InstanceStatus_instanceDeleting, ""},
	}
	if len(resp.GetInstances()) != len(wants) {
		t.Fatalf("%d instances, want %d: %s", len(resp.GetInstances()), len(wants), show(resp.GetInstances()))
	}
	for _, inst := range resp.GetInstances() {
		w, ok := wants[inst.GetId()]
		if !ok {
			t.Fatalf("unexpected instance %q", inst.GetId())
		}
		st := inst.GetStatus()
		if st.GetInstanceState() != w.state {
			t.Errorf("%s: state %v, want %v", inst.GetId(), st.GetInstanceState(), w.state)
		}
		ei := st.GetErrorInfo()
		if (w.errText == "") != (ei.GetErrorCode() == "") || !strings.Contains(ei.GetErrorMessage(), w.errText) {
			t.Errorf("%s: error info %s, want %q", inst.GetId(), show(ei), w.errText)
		}
		if w.errText != "" && ei.GetInstanceErrorClass() != autoscaler.ErrorClassOther {
			t.Errorf("%s: error class %d", inst.GetId(), ei.GetInstanceErrorClass())
		}
	}
	// Every id that is a providerID equals the Node's byte for byte, so cluster-autoscaler
	// matches it; and each id maps back to the group.
	for _, inst := range resp.GetInstances() {
		r, err := cl.NodeGroupForNode(f.ctx, &protos.NodeGroupForNodeRequest{Node: fakeNode(inst.GetId())})
		if err != nil || r.GetNodeGroup().GetId() != f.group("workers") {
			t.Errorf("instance %q maps to %s, %v", inst.GetId(), show(r.GetNodeGroup()), err)
		}
	}
	ids := map[string]bool{}
	for _, inst := range resp.GetInstances() {
		ids[inst.GetId()] = true
	}
	for _, vm := range []string{"vm-run", "vm-joined", "vm-del"} {
		if n := f.getNode(f.pid(vm)); !ids[n.Spec.ProviderID] {
			t.Errorf("no instance id equals tenant Node %s's providerID %q", n.Name, n.Spec.ProviderID)
		}
	}
}
