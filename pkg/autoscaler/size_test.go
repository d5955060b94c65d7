package autoscaler_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
)

func targetSize(t *testing.T, f *fixture, id string) int32 {
	t.Helper()
	resp, err := f.cl.NodeGroupTargetSize(f.ctx, &protos.NodeGroupTargetSizeRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetTargetSize()
}

// TestIncreaseSize: bounded by max, and TargetSize reflects the change as soon as the call
// returns (it answers from the cache, which the call waits for).
func TestIncreaseSize(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.md("workers", mdOpts{replicas: 1, annotations: bounds("1", "4")})
	cl := f.start()
	id := f.group("workers")

	if got := targetSize(t, f, id); got != 1 {
		t.Fatalf("target %d, want 1", got)
	}
	if _, err := cl.NodeGroupIncreaseSize(f.ctx, &protos.NodeGroupIncreaseSizeRequest{Id: id, Delta: 2}); err != nil {
		t.Fatal(err)
	}
	if got, api := targetSize(t, f, id), f.replicas(md); got != 3 || api != 3 {
		t.Fatalf("target %d, replicas %d; want 3", got, api)
	}
	_, err := cl.NodeGroupIncreaseSize(f.ctx, &protos.NodeGroupIncreaseSizeRequest{Id: id, Delta: 2})
	wantCode(t, err, codes.FailedPrecondition, "would exceed the maximum 4")
	for _, d := range []int32{0, -1} {
		_, err = cl.NodeGroupIncreaseSize(f.ctx, &protos.NodeGroupIncreaseSizeRequest{Id: id, Delta: d})
		wantCode(t, err, codes.InvalidArgument, "must be positive")
	}
	if api := f.replicas(md); api != 3 {
		t.Fatalf("refused calls changed replicas to %d", api)
	}
	if _, err := cl.NodeGroupIncreaseSize(f.ctx, &protos.NodeGroupIncreaseSizeRequest{Id: id, Delta: 1}); err != nil {
		t.Fatal(err)
	}
	// A change made behind the provider's back shows up in TargetSize too.
	f.setReplicas(md, 2)
	f.eventually("TargetSize to follow the MachineDeployment", func() bool { return targetSize(t, f, id) == 2 })
}

// TestDecreaseTargetSize drops only requests that are not fulfilled: never below the number of
// registered Machines, and surplus unregistered Machines are marked so Cluster API removes
// them rather than a registered one.
func TestDecreaseTargetSize(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.md("workers", mdOpts{replicas: 6, annotations: bounds("2", "10")})
	ms := f.ms(md, "workers-abc")
	// Registered: one through Cluster API's nodeRef, one seen only as a tenant Node.
	r1 := f.machine(ms, "workers-abc-r1", machineOpts{providerID: f.pid("r1"), registered: true, nodeRef: true})
	r2 := f.machine(ms, "workers-abc-r2", machineOpts{providerID: f.pid("r2"), registered: true})
	// Not registered: a VM without a Node yet, and a Machine without a providerID yet.
	u1 := f.machine(ms, "workers-abc-u1", machineOpts{providerID: f.pid("u1")})
	u2 := f.machine(ms, "workers-abc-u2", machineOpts{})
	cl := f.start()
	id := f.group("workers")

	// 6 → 4: two replicas were never created; no Machine needs to go.
	if _, err := cl.NodeGroupDecreaseTargetSize(f.ctx, &protos.NodeGroupDecreaseTargetSizeRequest{Id: id, Delta: -2}); err != nil {
		t.Fatal(err)
	}
	if got := targetSize(t, f, id); got != 4 {
		t.Fatalf("target %d, want 4", got)
	}
	for _, m := range []*clusterv1.Machine{r1, r2, u1, u2} {
		if _, ok := f.getMachine(m).Annotations[autoscaler.AnnotationDeleteMachine]; ok {
			t.Fatalf("%s marked although no Machine had to go", m.Name)
		}
	}
	// 4 → 1 would remove a registered node: refused, nothing changed. Min size (2) does not
	// apply to dropping unfulfilled requests, registered nodes (2) do.
	_, err := cl.NodeGroupDecreaseTargetSize(f.ctx, &protos.NodeGroupDecreaseTargetSizeRequest{Id: id, Delta: -3})
	wantCode(t, err, codes.FailedPrecondition, "below the 2 registered nodes")
	for _, d := range []int32{0, 1} {
		_, err = cl.NodeGroupDecreaseTargetSize(f.ctx, &protos.NodeGroupDecreaseTargetSizeRequest{Id: id, Delta: d})
		wantCode(t, err, codes.InvalidArgument, "must be negative")
	}
	if got := f.replicas(md); got != 4 {
		t.Fatalf("refused calls changed replicas to %d", got)
	}
	// 4 → 2: both unregistered Machines go, and exactly they are marked.
	if _, err := cl.NodeGroupDecreaseTargetSize(f.ctx, &protos.NodeGroupDecreaseTargetSizeRequest{Id: id, Delta: -2}); err != nil {
		t.Fatal(err)
	}
	if got := f.replicas(md); got != 2 {
		t.Fatalf("replicas %d, want 2", got)
	}
	for m, want := range map[*clusterv1.Machine]bool{r1: false, r2: false, u1: true, u2: true} {
		_, marked := f.getMachine(m).Annotations[autoscaler.AnnotationDeleteMachine]
		if marked != want {
			t.Errorf("%s marked=%v, want %v", m.Name, marked, want)
		}
	}
}

// TestPausedGroupIsNotScaled: a paused MachineDeployment is not listed, its Nodes belong to no
// group, and asked by id it refuses every change.
func TestPausedGroupIsNotScaled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.md("by-spec", mdOpts{replicas: 2, annotations: bounds("0", "5"), mutate: func(md *clusterv1.MachineDeployment) {
		md.Spec.Paused = ptr(true)
	}})
	ann := bounds("0", "5")
	ann[autoscaler.AnnotationPaused] = ""
	f.md("by-annotation", mdOpts{replicas: 2, annotations: ann})
	ms := f.ms(md, "by-spec-abc")
	f.machine(ms, "by-spec-abc-1", machineOpts{providerID: f.pid("vm-1"), registered: true, nodeRef: true})
	f.md("running", mdOpts{replicas: 1, annotations: bounds("0", "5")})
	cl := f.start()

	ng, err := cl.NodeGroups(f.ctx, &protos.NodeGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := groupIDs(t, ng); !slices.Equal(got, []string{f.group("running")}) {
		t.Fatalf("groups %v, want only the running one", got)
	}
	forNode, err := cl.NodeGroupForNode(f.ctx, &protos.NodeGroupForNodeRequest{Node: realNode(f.pid("vm-1"))})
	if err != nil || forNode.GetNodeGroup().GetId() != "" {
		t.Fatalf("node of a paused group: group %q, %v; want none", forNode.GetNodeGroup().GetId(), err)
	}
	for _, name := range []string{"by-spec", "by-annotation"} {
		id := f.group(name)
		if got := targetSize(t, f, id); got != 2 {
			t.Fatalf("%s: target %d", name, got)
		}
		_, err := cl.NodeGroupIncreaseSize(f.ctx, &protos.NodeGroupIncreaseSizeRequest{Id: id, Delta: 1})
		wantCode(t, err, codes.FailedPrecondition, "paused")
		_, err = cl.NodeGroupDecreaseTargetSize(f.ctx, &protos.NodeGroupDecreaseTargetSizeRequest{Id: id, Delta: -1})
		wantCode(t, err, codes.FailedPrecondition, "paused")
	}
	_, err = cl.NodeGroupDeleteNodes(f.ctx, &protos.NodeGroupDeleteNodesRequest{Id: f.group("by-spec"),
		Nodes: []*protos.ExternalGrpcNode{realNode(f.pid("vm-1"))}})
	wantCode(t, err, codes.FailedPrecondition, "paused")
	if got := f.replicas(md); got != 2 {
		t.Fatalf("paused group scaled to %d", got)
	}
}
