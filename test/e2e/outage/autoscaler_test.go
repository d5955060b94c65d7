package outage

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/client-go/rest"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

const (
	asGroup    = "omega-workers"
	asTemplate = "omega-worker"
	// providerUserAgent marks the replicas' requests in the audit log.
	providerUserAgent = "outage-autoscaler-provider"
)

// TestAutoscalerProviderReplicas: autoscaler-provider has no leader election of its own
// either; its only caller, cluster-autoscaler, elects, so in normal operation one replica is
// called at a time. Across a cluster-autoscaler failover the new leader may repeat the old
// one's NodeGroupDeleteNodes on the other replica — after the first call finished, or while it
// is still running there. Both must take exactly one replica off. (The second case once took
// two off — 3 → 1, and the MachineSet controller deleted a Machine nobody named — until the
// provider re-planned from live reads after a /scale conflict instead of re-applying its
// decrement.) IncreaseSize takes a delta, so the same call twice rightly adds twice;
// cluster-autoscaler does not repeat it, it re-reads the target size.
func TestAutoscalerProviderReplicas(t *testing.T) {
	needWorld(t)
	ctx := testCtx(t, 3*time.Minute)
	startCAPI(t)
	mgmt := env.Management.Client
	md := capi.NewMachineDeployment(infraNS, asGroup, cluster, asTemplate, 3)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "6"}
	for _, obj := range []client.Object{
		capi.NewCluster(infraNS, cluster),
		capi.NewKubevirtMachineTemplate(infraNS, asTemplate, cluster, 2, "3Gi"),
		md,
	} {
		if err := mgmt.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	defer removeGroup(t, md)

	a, b := startProvider(t, ctx), startProvider(t, ctx)
	group := autoscaler.GroupID(infraNS, asGroup)
	var instances []*protos.Instance
	eventually(t, ctx, "three running instances with tenant Nodes", func(ctx context.Context) (bool, error) {
		resp, err := a.NodeGroupNodes(ctx, &protos.NodeGroupNodesRequest{Id: group})
		if err != nil {
			return false, err
		}
		instances = resp.GetInstances()
		running := 0
		for _, in := range instances {
			if in.GetStatus().GetInstanceState() == protos.InstanceStatus_instanceRunning {
				running++
			}
		}
		var nodes corev1.NodeList
		if err := env.Tenant.Client.List(ctx, &nodes); err != nil {
			return false, err
		}
		return running == 3 && len(nodes.Items) >= 3, nil
	})

	// The failover that completed: A's call returned before B got the same one (the new
	// cluster-autoscaler leader repeating what the old one asked): one replica off.
	t.Run("same DeleteNodes on B after A", func(t *testing.T) {
		deleteTwice(t, ctx, md, instances[0].GetId(), a, b, false, 2)
	})
	// The failover that did not: both replicas in the same call at once.
	t.Run("same DeleteNodes on A and B at once", func(t *testing.T) {
		deleteTwice(t, ctx, md, instances[1].GetId(), a, b, true, 1)
	})
}

// deleteTwice asks replicas a and b to delete the node of instance victim — one after the
// other, or at once — and checks that the group ends at want replicas with only the victim's
// Machine gone, through one /scale write.
func deleteTwice(t *testing.T, ctx context.Context, md *clusterv1.MachineDeployment, victim string, a, b protos.CloudProviderClient, concurrent bool, want int32) {
	since := time.Now()
	mgmt := env.Management.Client
	group := autoscaler.GroupID(md.Namespace, md.Name)
	before, err := groupMachines(ctx, md)
	if err != nil {
		t.Fatal(err)
	}
	node := &protos.ExternalGrpcNode{ProviderID: victim, Name: victim} // a fake node, as CA sends for any
	tr := newTracker(ctx)
	for _, r := range []struct {
		name string
		cl   protos.CloudProviderClient
	}{{"A", a}, {"B", b}} {
		tr.call("DeleteNodes on "+r.name, func(ctx context.Context) error {
			_, err := r.cl.NodeGroupDeleteNodes(ctx, &protos.NodeGroupDeleteNodesRequest{Id: group, Nodes: []*protos.ExternalGrpcNode{node}})
			return err
		})
		if !concurrent {
			tr.wait(t)
		}
	}
	tr.wait(t)
	if t.Failed() {
		t.FailNow()
	}
	var left map[string]string
	eventually(t, ctx, "the group settled at its new size", func(ctx context.Context) (bool, error) {
		cur := &clusterv1.MachineDeployment{}
		if err := mgmt.Get(ctx, client.ObjectKeyFromObject(md), cur); err != nil {
			return false, err
		}
		if left, err = groupMachines(ctx, md); err != nil {
			return false, err
		}
		return int32(len(left)) == *cur.Spec.Replicas, nil
	})
	for name, pid := range before {
		if _, ok := left[name]; !ok && pid != victim {
			t.Errorf("Machine %s (%s) was deleted, only the victim's (%s) was asked for", name, pid, victim)
		}
	}
	if _, ok := left[nameOf(before, victim)]; ok {
		t.Errorf("the victim's Machine (%s) is still there", victim)
	}
	if n := int32(len(left)); n != want {
		t.Errorf("%d Machines after the same DeleteNodes on two replicas, want %d (%d − 1)", n, want, len(before))
	}
	calls := auditCounts(t, since, harness.ByUserAgentPrefix(providerUserAgent))
	if n := calls["update machinedeployments/scale"]; n != 1 {
		t.Errorf("audit log: %d successful /scale writes, want 1 (all: %s)", n, harness.FormatCounts(calls))
	}
	t.Logf("two autoscaler-provider replicas, same DeleteNodes (concurrent %v): Machines %d → %d; successful infra writes %s",
		concurrent, len(before), len(left), harness.FormatCounts(calls))
}

// groupMachines maps the names of the group's Machines to their providerIDs.
func groupMachines(ctx context.Context, md *clusterv1.MachineDeployment) (map[string]string, error) {
	var machines clusterv1.MachineList
	if err := env.Management.Client.List(ctx, &machines, client.InNamespace(md.Namespace),
		client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: md.Name}); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range machines.Items {
		out[m.Name] = m.Spec.ProviderID
	}
	return out, nil
}

func nameOf(machines map[string]string, providerID string) string {
	for name, pid := range machines {
		if pid == providerID {
			return name
		}
	}
	return ""
}

// startCAPI runs the Cluster API + CAPK simulator for the tenant (the KubeVirt one runs
// already, in fixture) until the test ends.
func startCAPI(t testing.TB) {
	t.Helper()
	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	if err := capi.Setup(ctx, mgr, capi.Options{PhaseDelay: phaseDelay, Tenant: env.Tenant.Client, ClusterName: cluster}); err != nil {
		stop()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Cluster API simulator: %v", err)
		}
	})
}

// removeGroup deletes the MachineDeployment and waits for its Machines to go, while the
// simulator still runs.
func removeGroup(t testing.TB, md *clusterv1.MachineDeployment) {
	ctx := testCtx(t, time.Minute)
	if err := env.Management.Client.Delete(ctx, md); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting %s: %v", md.Name, err)
		return
	}
	err := harness.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		var machines clusterv1.MachineList
		err := env.Management.Client.List(ctx, &machines, client.InNamespace(infraNS), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: md.Name})
		return len(machines.Items) == 0, err
	})
	if err != nil {
		t.Errorf("Machines of %s not gone: %v", md.Name, err)
	}
}

// startProvider runs one autoscaler-provider replica in-process, its requests marked with
// providerUserAgent for the audit log.
func startProvider(t testing.TB, ctx context.Context) protos.CloudProviderClient {
	t.Helper()
	cfg := rest.CopyConfig(env.Management.Config)
	cfg.UserAgent = providerUserAgent
	p, err := fixture.StartProvider(ctx, cfg, env.Tenant.Config, scope())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stopping a provider replica: %v", err)
		}
	})
	return p.Client
}

// ensureGroup makes a node group of the tenant (min 0, max 10) with replicas Machines asked
// for; the Cluster and the machine template are shared by every group and left in place.
func ensureGroup(tb testing.TB, ctx context.Context, name string, replicas int32) *clusterv1.MachineDeployment {
	tb.Helper()
	md := capi.NewMachineDeployment(infraNS, name, cluster, asTemplate, replicas)
	md.Annotations = map[string]string{autoscaler.AnnotationMinSize: "0", autoscaler.AnnotationMaxSize: "10"}
	for _, obj := range []client.Object{
		capi.NewCluster(infraNS, cluster),
		capi.NewKubevirtMachineTemplate(infraNS, asTemplate, cluster, 2, "3Gi"),
		md,
	} {
		if err := env.Management.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			tb.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	return md
}

// targetSize asks the provider for the group's target size, as cluster-autoscaler does on
// every loop.
func targetSize(ctx context.Context, p protos.CloudProviderClient, group string) (int32, error) {
	resp, err := p.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: group})
	return resp.GetTargetSize(), err
}

// scaleUpTo is cluster-autoscaler's scale-up as its loop repeats it: read the group's target
// size and ask for the difference to want with NodeGroupIncreaseSize. A call that failed may
// still have landed — a write held while the apiserver was away goes out when it is back, and
// its caller's deadline may pass meanwhile — so, as cluster-autoscaler does, a retry re-reads
// the target instead of repeating the delta.
func scaleUpTo(p protos.CloudProviderClient, group string, want int32) func(context.Context) error {
	return func(ctx context.Context) error {
		n, err := targetSize(ctx, p, group)
		if err != nil || n >= want {
			return err
		}
		_, err = p.NodeGroupIncreaseSize(ctx, &protos.NodeGroupIncreaseSizeRequest{Id: group, Delta: want - n})
		return err
	}
}

// targetIs: the provider answers the group's target size with want (its cache caught up).
func targetIs(p protos.CloudProviderClient, group string, want int32) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		n, err := targetSize(ctx, p, group)
		return n == want, err
	}
}

// replicasOf reads the MachineDeployment's replicas from the apiserver.
func replicasOf(ctx context.Context, md *clusterv1.MachineDeployment) (int32, error) {
	cur := &clusterv1.MachineDeployment{}
	if err := env.Management.Client.Get(ctx, client.ObjectKeyFromObject(md), cur); err != nil {
		return 0, err
	}
	if cur.Spec.Replicas == nil {
		return 0, nil
	}
	return *cur.Spec.Replicas, nil
}
