package autoscaler

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	toolscache "k8s.io/client-go/tools/cache"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// TestTableFollowsEvents drives the table's handlers as the informers would (adds, updates,
// deletes, tombstones, a namesake with a new UID) and checks that each answer follows: the
// table is the only source of the per-loop answers, so a missed event is a wrong answer.
func TestTableFollowsEvents(t *testing.T) {
	scope := infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}
	v := newView(scope, nil, nil, nil)
	tb := newTable(v)
	tb.haveNodes = true
	mdH := tb.handler(tb.indexDeployment)
	msH := tb.handler(tb.indexSet)
	mH := tb.handler(tb.indexMachine)
	nodeH := tb.handler(tb.indexNode)

	lbl := map[string]string{infra.LabelClusterName: scope.ClusterName}
	md := func(name string, uid types.UID, replicas int32, ann map[string]string) *clusterv1.MachineDeployment {
		d := &clusterv1.MachineDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: name, UID: uid,
			Labels: lbl, Annotations: ann}}
		d.Spec.ClusterName, d.Spec.Replicas = scope.ClusterName, ptrTo(replicas)
		return d
	}
	ms := func(name string, uid types.UID, owner *clusterv1.MachineDeployment) *clusterv1.MachineSet {
		s := &clusterv1.MachineSet{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: name, UID: uid,
			Labels: lbl, OwnerReferences: modelOwner("MachineDeployment", owner.Name, owner.UID)}}
		s.Spec.ClusterName = scope.ClusterName
		return s
	}
	machine := func(name, providerID string, owner *clusterv1.MachineSet) *clusterv1.Machine {
		m := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: name, UID: types.UID("uid-" + name),
			Labels: lbl, OwnerReferences: modelOwner("MachineSet", owner.Name, owner.UID)}}
		m.Spec.ClusterName, m.Spec.ProviderID = scope.ClusterName, providerID
		return m
	}
	groupOf := func(providerID string) string {
		if e := tb.groupForNode(providerID); e != nil {
			return e.msg.GetId()
		}
		return ""
	}
	instances := func(name string) []string {
		e, err := tb.group(GroupID(scope.Namespace, name))
		if err != nil {
			t.Fatalf("group %s: %v", name, err)
		}
		var out []string
		for _, in := range tb.instances(e) {
			// Not String(): the generated enum's String panics here (see wirecodec.go).
			state := map[protos.InstanceStatus_InstanceState]string{
				protos.InstanceStatus_instanceRunning:  "running",
				protos.InstanceStatus_instanceCreating: "creating",
				protos.InstanceStatus_instanceDeleting: "deleting",
			}[in.GetStatus().GetInstanceState()]
			out = append(out, in.GetId()+"="+state)
		}
		return out
	}
	ids := func() []string {
		var out []string
		for _, g := range tb.nodeGroups().GetNodeGroups() {
			out = append(out, g.GetId())
		}
		return out
	}
	a := GroupID(scope.Namespace, "a")

	mdA := md("a", "md-a", 2, map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "5"})
	mdB := md("b", "md-b", 1, nil) // not autoscaled
	mdH.OnAdd(mdA, true)
	mdH.OnAdd(mdB, true)
	msA := ms("a-1", "ms-a-1", mdA)
	msH.OnAdd(msA, true)
	m2, m1 := machine("a-m2", "kubevirt://vm-2", msA), machine("a-m1", "kubevirt://vm-1", msA)
	mH.OnAdd(m2, true)
	mH.OnAdd(m1, true)
	nodeH.OnAdd(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "vm-1"}, Spec: corev1.NodeSpec{ProviderID: "kubevirt://vm-1"}}, true)

	if got := ids(); !slices.Equal(got, []string{a}) {
		t.Fatalf("NodeGroups %v, want [%s]", got, a)
	}
	if _, err := tb.group(GroupID(scope.Namespace, "b")); !errors.Is(err, errGroupNotFound) {
		t.Fatalf("a MachineDeployment without bounds answered %v, want not found", err)
	}
	if got := groupOf("kubevirt://vm-2"); got != a {
		t.Fatalf("group of vm-2 %q, want %q", got, a)
	}
	if got, want := instances("a"), []string{"kubevirt://vm-1=running", "kubevirt://vm-2=creating"}; !slices.Equal(got, want) {
		t.Fatalf("instances %v, want %v (sorted by Machine name; vm-1 has a Node)", got, want)
	}

	// The server sends NodeGroups' answer as encoded once; it is the codec's own encoding.
	before := tb.nodeGroups()
	wire, ok := tb.encoded(before)
	want, err := Codec().Marshal(before)
	if err != nil || !ok || !bytes.Equal(wire, want) {
		t.Fatalf("pre-encoded NodeGroups answer %x (%v), want %x (%v)", wire, ok, want, err)
	}
	// A scale: the answers show the new size, NodeGroups is built again, and the old answer
	// is no longer sent from its old bytes.
	mdA2 := md("a", "md-a", 3, mdA.Annotations)
	mdH.OnUpdate(mdA, mdA2)
	if !tb.showsReplicas("a", 3) || tb.nodeGroups() == before {
		t.Fatal("the table did not take the update of MachineDeployment a")
	}
	if _, ok := tb.encoded(before); ok {
		t.Fatal("a replaced NodeGroups answer was sent from its old encoding")
	}
	// Paused: not listed, its Nodes in no group, but its size is still answered.
	paused := md("a", "md-a", 3, map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "5", AnnotationPaused: ""})
	mdH.OnUpdate(mdA2, paused)
	if got := ids(); len(got) != 0 || groupOf("kubevirt://vm-1") != "" || !tb.showsReplicas("a", 3) {
		t.Fatalf("paused group: NodeGroups %v, vm-1 in %q", got, groupOf("kubevirt://vm-1"))
	}
	mdH.OnUpdate(paused, mdA2)

	// A Machine that changes its providerID moves in the index; a deleted one (as a tombstone)
	// goes; the Node's deletion makes vm-1 unregistered.
	m2b := machine("a-m2", "kubevirt://vm-2b", msA)
	mH.OnUpdate(m2, m2b)
	if groupOf("kubevirt://vm-2") != "" || groupOf("kubevirt://vm-2b") != a {
		t.Fatal("the providerID index did not follow the Machine's update")
	}
	mH.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "tenant-a/a-m2", Obj: m2b})
	nodeH.OnDelete(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "vm-1"}, Spec: corev1.NodeSpec{ProviderID: "kubevirt://vm-1"}})
	if got, want := instances("a"), []string{"kubevirt://vm-1=creating"}; !slices.Equal(got, want) {
		t.Fatalf("instances %v, want %v", got, want)
	}

	// The MachineDeployment is deleted and a namesake created: the old MachineSet's Machines
	// are in no group (owner UID), and the old id's size is the new object's.
	mdH.OnDelete(mdA2)
	if _, err := tb.group(a); !errors.Is(err, errGroupNotFound) || groupOf("kubevirt://vm-1") != "" {
		t.Fatalf("deleted group: %v, vm-1 in %q", err, groupOf("kubevirt://vm-1"))
	}
	mdH.OnAdd(md("a", "md-a-new", 1, mdA.Annotations), false)
	if got := groupOf("kubevirt://vm-1"); got != "" {
		t.Fatalf("vm-1 of the old MachineDeployment's set is in %q, want none", got)
	}
	if got := instances("a"); len(got) != 0 {
		t.Fatalf("the new namesake has the old one's Machines: %v", got)
	}
	if !tb.showsReplicas("a", 1) {
		t.Fatal("the namesake's size is not answered")
	}
	// Another cluster's Machine with a known providerID is never chosen.
	other := machine("x", "kubevirt://vm-1", msA)
	other.Spec.ClusterName = "beta"
	mH.OnAdd(other, false)
	msH.OnUpdate(msA, ms("a-1", "ms-a-1", md("a", "md-a-new", 1, nil)))
	if got := groupOf("kubevirt://vm-1"); got != a {
		t.Fatalf("vm-1 in %q after its set was adopted by the namesake, want %q", got, a)
	}
}
