package autoscaler_test

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
)

func (f *fixture) deleteNodes(id string, nodes ...*protos.ExternalGrpcNode) error {
	_, err := f.cl.NodeGroupDeleteNodes(f.ctx, &protos.NodeGroupDeleteNodesRequest{Id: id, Nodes: nodes})
	return err
}

// markedSet returns which of machines carry the delete-machine annotation (from the API).
func (f *fixture) markedSet(machines ...*clusterv1.Machine) map[string]bool {
	out := map[string]bool{}
	for _, m := range machines {
		_, ok := f.getMachine(m).Annotations[autoscaler.AnnotationDeleteMachine]
		out[m.Name] = ok
	}
	return out
}

func wantMarked(t *testing.T, got map[string]bool, want ...string) {
	t.Helper()
	wantSet := map[string]bool{}
	for _, w := range want {
		wantSet[w] = true
	}
	for name, marked := range got {
		if marked != wantSet[name] {
			t.Errorf("%s marked=%v, want %v", name, marked, wantSet[name])
		}
	}
}

// TestDeleteNodes: the named Machines, and only they, are marked; replicas drop by the number
// newly marked; retries and Machines already on their way out take nothing more off; fake
// nodes of Machines that never registered work.
func TestDeleteNodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.md("workers", mdOpts{replicas: 7, annotations: bounds("1", "10")})
	ms := f.ms(md, "workers-abc")
	m1 := f.machine(ms, "m1", machineOpts{providerID: f.pid("vm-1"), registered: true, nodeRef: true})
	m2 := f.machine(ms, "m2", machineOpts{providerID: f.pid("vm-2"), registered: true, nodeRef: true})
	m3 := f.machine(ms, "m3", machineOpts{providerID: f.pid("vm-3"), registered: true, nodeRef: true})
	vmNoNode := f.machine(ms, "m4", machineOpts{providerID: f.pid("vm-4")}) // VM up, Node never joined
	noVM := f.machine(ms, "m5", machineOpts{})                              // no providerID at all
	// Someone else picked m6 for a later manual scale-down: no replica was taken off for it.
	m6 := f.machine(ms, "m6", machineOpts{providerID: f.pid("vm-6"), registered: true, nodeRef: true,
		mutate: func(m *clusterv1.Machine) {
			m.Annotations = map[string]string{autoscaler.AnnotationDeleteMachine: "operator"}
		}})
	// m7 is already being deleted (a finalizer holds it).
	m7 := f.machine(ms, "m7", machineOpts{providerID: f.pid("vm-7"), registered: true, nodeRef: true,
		mutate: func(m *clusterv1.Machine) { m.Finalizers = []string{"test.tenantcloud.io/hold"} }})
	if err := f.mgmt.Delete(f.ctx, m7); err != nil {
		t.Fatal(err)
	}
	all := []*clusterv1.Machine{m1, m2, m3, vmNoNode, noVM, m6, m7}
	f.start()
	id := f.group("workers")

	// Two registered nodes: replicas 7 → 5.
	if err := f.deleteNodes(id, realNode(f.pid("vm-1")), realNode(f.pid("vm-2"))); err != nil {
		t.Fatal(err)
	}
	if got := f.replicas(md); got != 5 {
		t.Fatalf("replicas %d, want 5", got)
	}
	wantMarked(t, f.markedSet(all...), "m1", "m2", "m6")
	// cluster-autoscaler retries (or repeats) the same call: nothing more comes off.
	if err := f.deleteNodes(id, realNode(f.pid("vm-1")), realNode(f.pid("vm-2"))); err != nil {
		t.Fatal(err)
	}
	if got := f.replicas(md); got != 5 {
		t.Fatalf("retry took more off: replicas %d, want 5", got)
	}
	// Fake nodes: one for a VM whose Node never joined (instance id = providerID), one for a
	// Machine that never got a providerID (the pending id NodeGroupNodes hands out).
	if err := f.deleteNodes(id, fakeNode(f.pid("vm-4")), fakeNode(autoscaler.PendingInstanceID(f.ns, "m5"))); err != nil {
		t.Fatal(err)
	}
	if got := f.replicas(md); got != 3 {
		t.Fatalf("replicas %d, want 3", got)
	}
	// The operator-marked m6 and the deleting m7: m6 counts (no replica was taken off for
	// it), m7 does not.
	if err := f.deleteNodes(id, realNode(f.pid("vm-6")), realNode(f.pid("vm-7"))); err != nil {
		t.Fatal(err)
	}
	if got := f.replicas(md); got != 2 {
		t.Fatalf("replicas %d, want 2", got)
	}
	wantMarked(t, f.markedSet(all...), "m1", "m2", "m4", "m5", "m6")
	if v := f.getMachine(m6).Annotations[autoscaler.AnnotationDeleteMachine]; v != "operator" {
		t.Errorf("the operator's annotation value was replaced by %q", v)
	}
	if _, ok := f.getMachine(m7).Annotations[autoscaler.AnnotationScaleDownRequested]; ok {
		t.Error("a deleting Machine was marked")
	}
	f.releaseFinalizers(m7)
}

func (f *fixture) releaseFinalizers(m *clusterv1.Machine) {
	f.t.Helper()
	cur := f.getMachine(m)
	cur.Finalizers = nil
	if err := f.mgmt.Update(f.ctx, cur); err != nil {
		f.t.Fatal(err)
	}
}

// TestDeleteNodesRefusals: a node outside the group, or a result below min size, changes
// nothing at all.
func TestDeleteNodesRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.md("workers", mdOpts{replicas: 3, annotations: bounds("2", "5")})
	ms := f.ms(md, "workers-abc")
	m1 := f.machine(ms, "m1", machineOpts{providerID: f.pid("vm-1"), registered: true, nodeRef: true})
	m2 := f.machine(ms, "m2", machineOpts{providerID: f.pid("vm-2"), registered: true, nodeRef: true})
	m3 := f.machine(ms, "m3", machineOpts{providerID: f.pid("vm-3"), registered: true, nodeRef: true})
	otherMD := f.md("others", mdOpts{replicas: 1, annotations: bounds("0", "5")})
	o1 := f.machine(f.ms(otherMD, "others-abc"), "o1", machineOpts{providerID: f.pid("vm-o1"), registered: true, nodeRef: true})
	beta := f.md("beta", mdOpts{cluster: "beta", replicas: 1, annotations: bounds("0", "5")})
	b1 := f.machine(f.ms(beta, "beta-abc"), "b1", machineOpts{providerID: f.pid("vm-b1")})
	all := []*clusterv1.Machine{m1, m2, m3, o1, b1}
	f.start()
	id := f.group("workers")

	for name, nodes := range map[string][]*protos.ExternalGrpcNode{
		"node of another group":   {realNode(f.pid("vm-1")), realNode(f.pid("vm-o1"))},
		"node of another cluster": {realNode(f.pid("vm-b1"))},
		"unknown node":            {realNode(f.pid("nope"))},
		"malformed node":          {{Name: "x", ProviderID: "kubevirt://../../etc"}},
		"node without any id":     {{}},
	} {
		err := f.deleteNodes(id, nodes...)
		wantCode(t, err, codes.InvalidArgument, "not in node group")
		if got := f.replicas(md); got != 3 {
			t.Fatalf("%s: replicas changed to %d", name, got)
		}
	}
	// 3 - 2 = 1 < min 2.
	err := f.deleteNodes(id, realNode(f.pid("vm-1")), realNode(f.pid("vm-2")))
	wantCode(t, err, codes.FailedPrecondition, "below the minimum 2")
	// A group of another cluster cannot even be named.
	err = f.deleteNodes(f.group("beta"), realNode(f.pid("vm-b1")))
	wantCode(t, err, codes.NotFound, "node group not found")

	if got, other := f.replicas(md), f.replicas(otherMD); got != 3 || other != 1 {
		t.Fatalf("replicas changed to %d / %d", got, other)
	}
	wantMarked(t, f.markedSet(all...))
	// One node is still allowed.
	if err := f.deleteNodes(id, realNode(f.pid("vm-3"))); err != nil {
		t.Fatal(err)
	}
	wantMarked(t, f.markedSet(all...), "m3")
}

// TestDeleteNodesConcurrent: calls on one group are serialised, so concurrent and duplicate
// requests take exactly one replica off per distinct Machine.
func TestDeleteNodesConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 6
	md := f.md("workers", mdOpts{replicas: n, annotations: bounds("0", "10")})
	ms := f.ms(md, "workers-abc")
	var machines []*clusterv1.Machine
	for i := 1; i <= n; i++ {
		machines = append(machines, f.machine(ms, fmt.Sprintf("m%d", i),
			machineOpts{providerID: f.pid(fmt.Sprintf("vm-%d", i)), registered: true, nodeRef: true}))
	}
	f.start()
	id := f.group("workers")

	// m1..m4, each requested twice (a retry racing the original).
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for round := 0; round < 2; round++ {
		for i := 1; i <= 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- f.deleteNodes(id, realNode(f.pid(fmt.Sprintf("vm-%d", i))))
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := f.replicas(md); got != n-4 {
		t.Fatalf("replicas %d, want %d", got, n-4)
	}
	wantMarked(t, f.markedSet(machines...), "m1", "m2", "m3", "m4")
}
