package autoscaler_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// BenchmarkLoop1000Nodes measures what cluster-autoscaler asks every loop, against the real
// binary, with 100 node groups of 10 registered Machines (1,000 tenant Nodes): one iteration
// is one loop (Refresh, NodeGroups, TargetSize per group, NodeGroupForNode per node). Reports
// p50/p99 per call and the provider's RSS. Goal (issue 7): p99 ≤ 1 ms per call from cache.
func BenchmarkLoop1000Nodes(b *testing.B) {
	const groups, perGroup = 100, 10
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := buildProvider(b, ctx)
	ns, cluster := "bench-"+strings.ToLower(rand.String(5)), "alpha"
	c := env.Management.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}
	providerIDs := populate(b, ctx, ns, cluster, groups, perGroup)
	p := runProvider(b, bin, ns, cluster)
	cl := protos.NewCloudProviderClient(p.dial(b))

	var forNode, nodeGroups, targetSize stats.Latencies
	since := time.Now()
	for b.Loop() {
		if _, err := cl.Refresh(ctx, &protos.RefreshRequest{}); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		resp, err := cl.NodeGroups(ctx, &protos.NodeGroupsRequest{})
		nodeGroups.Since(start)
		if err != nil || len(resp.GetNodeGroups()) != groups {
			b.Fatalf("%d groups, %v", len(resp.GetNodeGroups()), err)
		}
		for _, g := range resp.GetNodeGroups() {
			start := time.Now()
			if _, err := cl.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: g.GetId()}); err != nil {
				b.Fatal(err)
			}
			targetSize.Since(start)
		}
		for _, id := range providerIDs {
			start := time.Now()
			r, err := cl.NodeGroupForNode(ctx, &protos.NodeGroupForNodeRequest{Node: &protos.ExternalGrpcNode{
				ProviderID: id, Name: strings.TrimPrefix(id, infra.ProviderIDPrefix)}})
			forNode.Since(start)
			if err != nil || r.GetNodeGroup().GetId() == "" {
				b.Fatalf("node %s: group %q, %v", id, r.GetNodeGroup().GetId(), err)
			}
		}
	}
	until := time.Now()
	reportSteadyCalls(b, since, until)
	forNode.Report(b, "nodegroupfornode")
	nodeGroups.Report(b, "nodegroups")
	targetSize.Report(b, "targetsize")
	stats.ReportRSS(b, "autoscaler-provider", p.cmd.Process.Pid)
}

// reportSteadyCalls adds the provider's requests per minute to both apiservers between since
// and until, by verb and resource, from their audit logs: CA's loop is answered from the
// informer caches, so the goal is none at all.
func reportSteadyCalls(b *testing.B, since, until time.Time) {
	minutes := until.Sub(since).Minutes()
	// A zero below must mean no requests, not a filter that matches nothing: the provider's
	// start-up LISTs are in the log under the same user agent.
	all, err := env.Management.AuditEvents(time.Time{}, harness.ByUserAgentPrefix("tenantcloud-autoscaler-provider/"))
	if err != nil || len(all) == 0 {
		b.Fatalf("no requests by the provider's user agent in the audit log (%v)", err)
	}
	for _, c := range []struct {
		prefix  string
		cluster *harness.Cluster
	}{{"loop-mgmt-", env.Management}, {"loop-tenant-", env.Tenant}} {
		events, err := c.cluster.AuditEvents(since, func(e harness.AuditEvent) bool {
			return harness.ByUserAgentPrefix("tenantcloud-autoscaler-provider/")(e) && e.StageTimestamp.Before(until)
		})
		if err != nil {
			b.Fatal(err)
		}
		stats.ReportCalls(b, c.prefix, harness.CountByKey(events), minutes, "min")
		b.ReportMetric(float64(len(events))/minutes, c.prefix+"calls/min")
	}
}

// populate creates groups × perGroup registered Machines (with MachineDeployments, MachineSets
// and tenant Nodes) and returns their providerIDs.
func populate(tb testing.TB, ctx context.Context, ns, cluster string, groups, perGroup int) []string {
	tb.Helper()
	c, tenant := env.Management.Client, env.Tenant.Client
	var (
		mu   sync.Mutex
		ids  []string
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 8)
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for g := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("g%03d", g)
			md := groupMD(ns, name, cluster, int32(perGroup))
			md.Annotations[autoscaler.AnnotationMaxSize] = "100"
			if err := c.Create(ctx, md); err != nil {
				fail(err)
				return
			}
			ms := &clusterv1.MachineSet{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-abc", Labels: md.Labels,
					OwnerReferences: []metav1.OwnerReference{controllerRef(md, "MachineDeployment")}},
				Spec: clusterv1.MachineSetSpec{ClusterName: cluster, Selector: md.Spec.Selector, Template: md.Spec.Template},
			}
			if err := c.Create(ctx, ms); err != nil {
				fail(err)
				return
			}
			for i := range perGroup {
				vm := fmt.Sprintf("%s-%s-%d", ns, name, i)
				m := &clusterv1.Machine{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: vm, Labels: md.Labels,
						OwnerReferences: []metav1.OwnerReference{controllerRef(ms, "MachineSet")}},
					Spec: md.Spec.Template.Spec,
				}
				m.Spec.ProviderID = infra.ProviderID(vm)
				if err := c.Create(ctx, m); err != nil {
					fail(err)
					return
				}
				if err := tenant.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: vm},
					Spec: corev1.NodeSpec{ProviderID: m.Spec.ProviderID}}); err != nil {
					fail(err)
					return
				}
				mu.Lock()
				ids = append(ids, m.Spec.ProviderID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		tb.Fatalf("populating: %v", errs[0])
	}
	tb.Cleanup(func() {
		for _, id := range ids {
			_ = tenant.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Name: strings.TrimPrefix(id, infra.ProviderIDPrefix)}})
		}
	})
	return ids
}

func controllerRef(owner client.Object, kind string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: clusterv1.GroupVersion.String(), Kind: kind, Name: owner.GetName(),
		UID: owner.GetUID(), Controller: ptr(true)}
}
