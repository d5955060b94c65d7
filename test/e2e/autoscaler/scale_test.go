package autoscaler_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/kubevirt"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

const (
	simCluster = "alpha"
	phaseDelay = 20 * time.Millisecond
	runLabel   = "node.cluster.x-k8s.io/e2e-run"
)

var (
	schedulerOnce sync.Once
	errScheduler  error
)

// startScheduler runs the real kube-scheduler against the tenant once per test binary.
func startScheduler(ctx context.Context) error {
	schedulerOnce.Do(func() { _, errScheduler = env.StartScheduler(ctx) })
	return errScheduler
}

// world is the simulated tenant: Cluster API + CAPK + KubeVirt + kubelets in the harness, and
// the provider in front of it.
type world struct {
	t      testing.TB
	ctx    context.Context
	ns     string
	mgmt   client.Client
	tenant client.Client
	faults *fault.Injector
	cl     protos.CloudProviderClient
}

func startWorld(t testing.TB, ctx context.Context) *world {
	t.Helper()
	w := &world{t: t, ctx: ctx, ns: "sim-" + strings.ToLower(rand.String(5)),
		mgmt: env.Management.Client, tenant: env.Tenant.Client, faults: fault.New()}
	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := kubevirt.Setup(ctx, mgr, kubevirt.Options{PhaseDelay: phaseDelay, Faults: w.faults}); err != nil {
		t.Fatal(err)
	}
	if err := capi.Setup(ctx, mgr, capi.Options{PhaseDelay: phaseDelay, Faults: w.faults, Tenant: env.Tenant.Client,
		ClusterName: simCluster}); err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("simulator: %v\ngoroutines still in simulator or controller-runtime code:\n%s", err, simmgr.StuckGoroutines())
		}
	})
	return w
}

func (w *world) eventually(what string, cond func() bool) {
	w.t.Helper()
	if err := wait.PollUntilContextTimeout(w.ctx, 20*time.Millisecond, 60*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		w.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// loop is one cluster-autoscaler main loop's worth of calls, in its order: Refresh,
// NodeGroups, TargetSize for every group, NodeGroupForNode for every tenant Node, and the
// instances of every group.
type loopResult struct {
	groups    []string
	target    map[string]int32
	nodeGroup map[string]string // tenant Node providerID → group id
	instances map[string][]*protos.Instance
	nodes     []corev1.Node
}

func (w *world) loop() loopResult {
	w.t.Helper()
	ctx, cl := w.ctx, w.cl
	if _, err := cl.Refresh(ctx, &protos.RefreshRequest{}); err != nil {
		w.t.Fatal(err)
	}
	r := loopResult{target: map[string]int32{}, nodeGroup: map[string]string{}, instances: map[string][]*protos.Instance{}}
	ng, err := cl.NodeGroups(ctx, &protos.NodeGroupsRequest{})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, g := range ng.GetNodeGroups() {
		r.groups = append(r.groups, g.GetId())
		ts, err := cl.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: g.GetId()})
		if err != nil {
			w.t.Fatal(err)
		}
		r.target[g.GetId()] = ts.GetTargetSize()
	}
	var nodes corev1.NodeList
	if err := w.tenant.List(ctx, &nodes); err != nil {
		w.t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if !strings.HasPrefix(n.Annotations[capi.AnnotationSimVMI], w.ns+"/") {
			continue // another test's Node
		}
		r.nodes = append(r.nodes, n)
		resp, err := cl.NodeGroupForNode(ctx, &protos.NodeGroupForNodeRequest{Node: &protos.ExternalGrpcNode{
			ProviderID: n.Spec.ProviderID, Name: n.Name, Labels: n.Labels, Annotations: n.Annotations}})
		if err != nil {
			w.t.Fatal(err)
		}
		r.nodeGroup[n.Spec.ProviderID] = resp.GetNodeGroup().GetId()
	}
	for _, id := range r.groups {
		resp, err := cl.NodeGroupNodes(ctx, &protos.NodeGroupNodesRequest{Id: id})
		if err != nil {
			w.t.Fatal(err)
		}
		r.instances[id] = resp.GetInstances()
	}
	return r
}

// settled reports whether group has n instances, all running, each with a registered tenant
// Node whose providerID equals the instance id, mapped back to the group.
func (r loopResult) settled(group string, n int) bool {
	if r.target[group] != int32(n) || len(r.instances[group]) != n {
		return false
	}
	for _, inst := range r.instances[group] {
		if inst.GetStatus().GetInstanceState() != protos.InstanceStatus_instanceRunning || r.nodeGroup[inst.GetId()] != group {
			return false
		}
	}
	return true
}

func (w *world) scaleUp(group string, delta int32) {
	w.t.Helper()
	if _, err := w.cl.NodeGroupIncreaseSize(w.ctx, &protos.NodeGroupIncreaseSizeRequest{Id: group, Delta: delta}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) deleteNodes(group string, nodes ...*protos.ExternalGrpcNode) {
	w.t.Helper()
	if _, err := w.cl.NodeGroupDeleteNodes(w.ctx, &protos.NodeGroupDeleteNodesRequest{Id: group, Nodes: nodes}); err != nil {
		w.t.Fatal(err)
	}
}

// TestScaleUpAndDown drives the simulated Cluster API the way cluster-autoscaler would, with the
// real kube-scheduler producing the Unschedulable pod that asks for a node: scale from zero
// from the KubevirtMachineTemplate's capacity, scale-down of a named node, a Machine whose
// Node never registers and one that fails, both removed through fake nodes; another cluster's
// MachineDeployment in the same namespace is never listed or touched.
func TestScaleUpAndDown(t *testing.T) {
	// Cancelled by a cleanup, not a defer: the teardown below needs the simulator running
	// after the test body returns.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	w := startWorld(t, ctx)
	if err := w.mgmt.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}); err != nil {
		t.Fatal(err)
	}
	declareTemplateCapacity(t, ctx)
	for _, obj := range []client.Object{
		capi.NewCluster(w.ns, simCluster),
		capi.NewKubevirtMachineTemplate(w.ns, "worker", simCluster, 2, "3Gi"),
	} {
		if err := w.mgmt.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	md := capi.NewMachineDeployment(w.ns, "workers", simCluster, "worker", 0)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "4"}
	// A label Cluster API syncs to the Nodes: the pending pod selects it, so only this group's
	// nodes can take it, and the template must promise it.
	md.Spec.Template.Labels[runLabel] = w.ns
	beta := capi.NewMachineDeployment(w.ns, "beta-workers", "beta", "worker", 1)
	beta.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "4"}
	for _, obj := range []client.Object{md, beta} {
		if err := w.mgmt.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// The simulated CAPK publishes the template's capacity; CA would cache the template, so
	// ask only once it is there.
	w.eventually("KubevirtMachineTemplate status.capacity", func() bool {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(capi.KubevirtMachineTemplateAPIVersion)
		u.SetKind("KubevirtMachineTemplate")
		if err := w.mgmt.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: "worker"}, u); err != nil {
			return false
		}
		_, ok, _ := unstructured.NestedMap(u.Object, "status", "capacity")
		return ok
	})
	t.Cleanup(func() { w.teardown(md) })
	w.cl = startProvider(t, ctx, infra.Scope{Namespace: w.ns, ClusterName: simCluster})
	group := autoscaler.GroupID(w.ns, "workers")

	r := w.loop()
	if !slices.Equal(r.groups, []string{group}) || r.target[group] != 0 || len(r.instances[group]) != 0 {
		t.Fatalf("initial loop: groups %v targets %v instances %s", r.groups, r.target, show(r.instances))
	}

	// A pod the empty cluster cannot run, as the real scheduler reports it.
	if err := startScheduler(context.Background()); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "needs-a-node-" + w.ns},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{runLabel: w.ns}, Containers: []corev1.Container{{Name: "app", Image: "app",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("2Gi")}}}}},
	}
	if err := w.tenant.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	w.eventually("the pod to be Unschedulable", func() bool {
		if err := w.tenant.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true
			}
		}
		return false
	})

	// Scale from zero: the template says a new node fits the pod.
	tmpl, err := w.cl.NodeGroupTemplateNodeInfo(ctx, &protos.NodeGroupTemplateNodeInfoRequest{Id: group})
	if err != nil {
		t.Fatal(err)
	}
	cpu, mem := tmpl.GetNodeInfo().Status.Allocatable.Cpu(), tmpl.GetNodeInfo().Status.Allocatable.Memory()
	if cpu.Cmp(resource.MustParse("2")) != 0 || mem.Cmp(resource.MustParse("3Gi")) != 0 {
		t.Fatalf("template allocatable cpu %s memory %s, want 2 and 3Gi", cpu, mem)
	}
	w.scaleUp(group, 2)
	w.eventually("two running nodes", func() bool { r = w.loop(); return r.settled(group, 2) })
	w.eventually("the pod to be scheduled", func() bool {
		return w.tenant.Get(ctx, client.ObjectKeyFromObject(pod), pod) == nil && pod.Spec.NodeName != ""
	})
	// What the template promised is what the nodes have: capacity, and every label but the
	// hostname (Cluster API syncs labels shortly after a Node joins).
	w.eventually("the nodes to match the template", func() bool {
		r = w.loop()
		for _, n := range r.nodes {
			for name, want := range tmpl.GetNodeInfo().Status.Capacity {
				if got := n.Status.Capacity[name]; got.Cmp(want) != 0 {
					t.Fatalf("node %s %s capacity %s, template %s", n.Name, name, got.String(), want.String())
				}
			}
			for k, v := range tmpl.GetNodeInfo().Labels {
				if got, ok := n.Labels[k]; k != corev1.LabelHostname && (!ok || got != v) {
					return false
				}
			}
		}
		return len(r.nodes) == 2
	})

	// Scale down the node the pod does not run on, by name.
	var idle, busy corev1.Node
	for _, n := range r.nodes {
		if n.Name == pod.Spec.NodeName {
			busy = n
		} else {
			idle = n
		}
	}
	w.deleteNodes(group, &protos.ExternalGrpcNode{Name: idle.Name, ProviderID: idle.Spec.ProviderID})
	w.eventually("the idle node to go", func() bool {
		r = w.loop()
		return r.settled(group, 1) && r.instances[group][0].GetId() == busy.Spec.ProviderID && len(r.nodes) == 1
	})

	// A Machine whose VM runs but whose Node never joins: CA gives up on it and deletes it
	// through a fake node carrying the instance id.
	w.faults.FailNext(capi.FaultMachineNodeJoin, 1)
	w.scaleUp(group, 1)
	var stuck *protos.Instance
	w.eventually("a VM without a Node", func() bool {
		r = w.loop()
		for _, inst := range r.instances[group] {
			if inst.GetId() != busy.Spec.ProviderID && strings.HasPrefix(inst.GetId(), infra.ProviderIDPrefix) &&
				inst.GetStatus().GetInstanceState() == protos.InstanceStatus_instanceCreating {
				stuck = inst
				return true
			}
		}
		return false
	})
	w.deleteNodes(group, &protos.ExternalGrpcNode{Name: stuck.GetId(), ProviderID: stuck.GetId()})
	w.eventually("the unregistered Machine to go", func() bool { r = w.loop(); return r.settled(group, 1) })

	// A Machine whose provisioning fails: reported with an error, removed the same way.
	w.faults.FailNext(capi.FaultMachineProvision, 1)
	w.scaleUp(group, 1)
	var failed *protos.Instance
	w.eventually("a failed Machine reported with an error", func() bool {
		r = w.loop()
		for _, inst := range r.instances[group] {
			if ei := inst.GetStatus().GetErrorInfo(); ei.GetErrorCode() == autoscaler.ErrorCodeMachineFailed {
				failed = inst
				return true
			}
		}
		return false
	})
	if st := failed.GetStatus(); st.GetInstanceState() != protos.InstanceStatus_instanceCreating ||
		!strings.Contains(st.GetErrorInfo().GetErrorMessage(), "CreateError") {
		t.Errorf("failed instance %s", show(failed))
	}
	w.deleteNodes(group, &protos.ExternalGrpcNode{Name: failed.GetId(), ProviderID: failed.GetId()})
	w.eventually("the failed Machine to go", func() bool { r = w.loop(); return r.settled(group, 1) })

	// The other cluster's MachineDeployment was never listed, and never touched.
	cur := &clusterv1.MachineDeployment{}
	if err := w.mgmt.Get(ctx, client.ObjectKeyFromObject(beta), cur); err != nil {
		t.Fatal(err)
	}
	if *cur.Spec.Replicas != 1 || cur.Generation != 1 {
		t.Errorf("beta MachineDeployment changed: replicas %d generation %d", *cur.Spec.Replicas, cur.Generation)
	}
	for _, id := range r.groups {
		if id != group {
			t.Errorf("unexpected group %s", id)
		}
	}
	t.Logf("final: %d node(s), instances %s", len(r.nodes), show(r.instances[group]))
}

// show renders generated externalgrpc messages for test output; their String method panics
// (see pkg/autoscaler/wirecodec.go), so %v must not be used on them.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// teardown deletes the group's MachineDeployment and waits for the simulator to take its
// Machines and tenant Nodes down (no garbage collector runs in the harness), so nothing of
// this test is left in the shared tenant cluster. It runs before the simulator stops.
func (w *world) teardown(md *clusterv1.MachineDeployment) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w.ctx = ctx
	if err := w.mgmt.Delete(ctx, md); client.IgnoreNotFound(err) != nil {
		w.t.Errorf("teardown: %v", err)
		return
	}
	w.eventually("the group's Machines and Nodes to go", func() bool {
		var machines clusterv1.MachineList
		if err := w.mgmt.List(ctx, &machines, client.InNamespace(w.ns),
			client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: md.Name}); err != nil {
			return false
		}
		var nodes corev1.NodeList
		if err := w.tenant.List(ctx, &nodes); err != nil {
			return false
		}
		for _, n := range nodes.Items {
			if strings.HasPrefix(n.Annotations[capi.AnnotationSimVMI], w.ns+"/") {
				return false
			}
		}
		return len(machines.Items) == 0
	})
}
