package autoscaler_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// scaleUpNodes is the size VK Cloud's managed Kubernetes promises a node pool grows to "in
// minutes" (issue 17).
const scaleUpNodes = 100

// BenchmarkScaleUp100 (issue 17): 100 pending pods, one per node, make the real
// cluster-autoscaler (externalgrpc, --scan-interval=1s) grow a group from 0 to 100 through the
// autoscaler-provider binary and the simulated Cluster API/CAPK/KubeVirt, whose simulated
// kubelets register the Nodes; the real kube-scheduler places the pods. scale-up-100-ms: from
// the pods' creation (cluster-autoscaler already running) to 100 Ready Nodes and every pod
// scheduled; scale-up-100-replicas-ms to the MachineDeployment at 100. The provider's share:
// provider-rpc-ms, the time its handlers spent answering cluster-autoscaler's calls (its gRPC
// duration histogram's sum over the run: server side, without the transport),
// provider-share-% (that over scale-up-100-ms), provider-rpc-calls, ca-loops and
// provider-rpc-calls/loop, and scale-writes, its /scale writes (audit log); and the RSS of
// cluster-autoscaler and the provider at the end. One iteration is one 0 → 100 scale-up on a
// fresh group, minutes long: make bench runs it at -benchtime=1x (Makefile BENCH_SLOW).
func BenchmarkScaleUp100(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel) // the teardown needs the simulator running
	caBin := realCA(b)
	providerBin := buildProvider(b, ctx)
	if err := startScheduler(context.Background()); err != nil {
		b.Fatal(err)
	}
	var total, replicas time.Duration
	var rpcs []map[string]rpcStat
	var scaleWrites int
	var roundTrips stats.Latencies
	b.ResetTimer()
	for range b.N {
		r := scaleUp100(b, ctx, caBin, providerBin, &roundTrips)
		total, replicas = total+r.total, replicas+r.replicas
		rpcs = append(rpcs, r.rpcs)
		scaleWrites += r.scaleWrites
	}
	var all rpcStat
	loops := 0
	for _, r := range rpcs {
		t := rpcTotal(r)
		all.calls += t.calls
		all.seconds += t.seconds
		loops += r["Refresh"].calls
	}
	n := float64(b.N)
	b.ReportMetric(float64(total.Milliseconds())/n, "scale-up-100-ms")
	b.ReportMetric(float64(replicas.Milliseconds())/n, "scale-up-100-replicas-ms")
	b.ReportMetric(all.seconds*1000/n, "provider-rpc-ms")
	// The provider's answers are on cluster-autoscaler's path (it calls one at a time), so
	// their sum over the scale-up is an upper bound of what the provider's handlers added to
	// it; the loopback transport and cluster-autoscaler's side of each call are not in it.
	b.ReportMetric(100*all.seconds/total.Seconds(), "provider-share-%")
	// Seen from cluster-autoscaler, each call also costs the loopback transport. Estimated
	// from the round trip of a near-empty call (NodeGroupTargetSize) timed by a Go gRPC client
	// like cluster-autoscaler's once the scale-up is done: handler time plus, per call, that
	// round trip's median. The box is quieter then than during the scale-up, so this rather
	// underestimates; it is a figure to read beside the share, not one the goal bounds.
	roundTrips.Report(b, "grpc-roundtrip")
	clientSeconds := all.seconds + float64(all.calls)*roundTrips.Quantile(0.5).Seconds()
	b.ReportMetric(100*clientSeconds/total.Seconds(), "provider-share-client-est-%")
	b.ReportMetric(float64(all.calls)/n, "provider-rpc-calls")
	// cluster-autoscaler calls Refresh once at the start of every loop.
	b.ReportMetric(float64(loops)/n, "ca-loops")
	if loops > 0 {
		b.ReportMetric(float64(all.calls)/float64(loops), "provider-rpc-calls/loop")
	}
	b.ReportMetric(float64(scaleWrites)/n, "scale-writes")
}

type scaleUpResult struct {
	total, replicas time.Duration
	rpcs            map[string]rpcStat // per method, from the pods' creation to the end
	scaleWrites     int
}

// roundTripCalls is how many near-empty calls time the loopback transport after a scale-up.
const roundTripCalls = 200

func scaleUp100(b *testing.B, ctx context.Context, caBin, providerBin string, roundTrips *stats.Latencies) scaleUpResult {
	b.StopTimer()
	w := startWorld(b, ctx)
	md := w.createGroup(0, 0, scaleUpNodes)
	w.templateCapacity()
	p := runProvider(b, providerBin, w.ns, simCluster)
	// Nodes that registered before the scheduler placed their pod are empty for a moment: with
	// the shared flags' 1 s scale-down timings cluster-autoscaler would remove them again.
	caLog, caPid := startCA(b, caBin, p.grpcAddr, "--max-node-provision-time=15m", "--scale-down-enabled=false")
	before := rpcStats(b, p.metricsAddr)

	b.StartTimer()
	start := time.Now()
	pods := make([]*corev1.Pod, scaleUpNodes)
	for i := range pods {
		pods[i] = w.newPod(fmt.Sprintf("up-%d", i))
	}
	var r scaleUpResult
	w.long(p, caLog, "the group at 100 replicas", 10*time.Minute, func() bool { return w.mdReplicas(md) == scaleUpNodes })
	r.replicas = time.Since(start)
	w.long(p, caLog, "100 Ready Nodes and every pod scheduled", 15*time.Minute, func() bool {
		if len(w.readyNodes()) != scaleUpNodes {
			return false
		}
		var list corev1.PodList
		if err := w.tenant.List(ctx, &list, client.InNamespace("default")); err != nil {
			return false
		}
		scheduled := 0
		for _, pod := range list.Items {
			if strings.HasSuffix(pod.Name, "-"+w.ns) && pod.Spec.NodeName != "" {
				scheduled++
			}
		}
		return scheduled == scaleUpNodes
	})
	r.total = time.Since(start)
	r.rpcs = rpcDelta(before, rpcStats(b, p.metricsAddr))
	b.StopTimer()
	// Both programs' memory with 100 Nodes, 100 Machines and 100 pods cached: what the
	// charts' limits for them must hold (deploy/README.md#memory).
	stats.ReportRSS(b, "cluster-autoscaler", caPid)
	stats.ReportRSS(b, "autoscaler-provider", p.cmd.Process.Pid)

	events, err := env.Management.AuditEvents(start, func(e harness.AuditEvent) bool {
		return strings.HasPrefix(e.UserAgent, "tenantcloud-autoscaler-provider") && e.Key() == "update machinedeployments/scale" &&
			e.ResponseStatus != nil && e.ResponseStatus.Code < 300
	})
	if err != nil {
		b.Fatalf("reading the management audit log: %v", err)
	}
	r.scaleWrites = len(events)
	if r.scaleWrites == 0 {
		b.Fatalf("no /scale write by autoscaler-provider in the audit log, yet the group reached %d", scaleUpNodes)
	}
	t := rpcTotal(r.rpcs)
	b.Logf("0 → %d: replicas after %s, all Nodes Ready and pods scheduled after %s; provider %d calls in %d loops, %.0f ms in its handlers (%s); %d /scale writes; calls by outcome: %s",
		scaleUpNodes, r.replicas.Round(time.Millisecond), r.total.Round(time.Millisecond), t.calls, r.rpcs["Refresh"].calls,
		t.seconds*1000, formatRPCs(r.rpcs), r.scaleWrites, harness.FormatCounts(grpcCalls(b, p.metricsAddr)))

	cl := protos.NewCloudProviderClient(p.dial(b))
	group := autoscaler.GroupID(w.ns, md.Name)
	for range roundTripCalls {
		start := time.Now()
		resp, err := cl.NodeGroupTargetSize(ctx, &protos.NodeGroupTargetSizeRequest{Id: group})
		roundTrips.Since(start)
		if err != nil || resp.GetTargetSize() != scaleUpNodes {
			b.Fatalf("NodeGroupTargetSize of %s: %d, %v; want %d", group, resp.GetTargetSize(), err, scaleUpNodes)
		}
	}

	// Empty the group untimed, with room for 100 Nodes to go on a busy machine.
	for _, pod := range pods {
		_ = w.tenant.Delete(ctx, pod, client.GracePeriodSeconds(0))
	}
	if err := w.mgmt.Delete(ctx, md); client.IgnoreNotFound(err) != nil {
		b.Fatalf("deleting the MachineDeployment: %v", err)
	}
	w.long(p, caLog, "the group's Machines to go", 10*time.Minute, func() bool {
		var machines clusterv1.MachineList
		err := w.mgmt.List(ctx, &machines, client.InNamespace(w.ns), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: md.Name})
		return err == nil && len(machines.Items) == 0
	})
	return r
}

// rpcStat is what the provider's gRPC metrics say of one method: calls and the seconds its
// handlers took (server side: from the interceptor around the handler, so neither the
// transport nor cluster-autoscaler's own marshalling is in it).
type rpcStat struct {
	calls   int
	seconds float64
}

// rpcStats reads the provider's gRPC duration histogram per method.
func rpcStats(tb testing.TB, metricsAddr string) map[string]rpcStat {
	tb.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		tb.Fatalf("reading the provider's metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	const prefix = "tenantcloud_autoscaler_grpc_request_duration_seconds_"
	stats := map[string]rpcStat{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		kind, labels, ok := strings.Cut(strings.TrimPrefix(name, prefix), "{")
		method := strings.TrimSuffix(strings.TrimPrefix(labels, `method="`), `"}`)
		if !ok || method == labels {
			continue
		}
		st := stats[method]
		switch kind {
		case "sum":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				tb.Fatalf("metric %q: %v", line, err)
			}
			st.seconds = v
		case "count":
			v, err := strconv.Atoi(value)
			if err != nil {
				tb.Fatalf("metric %q: %v", line, err)
			}
			st.calls = v
		}
		stats[method] = st
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("reading the provider's metrics: %v", err)
	}
	return stats
}

// rpcDelta is the calls and time of every method between two readings.
func rpcDelta(before, after map[string]rpcStat) map[string]rpcStat {
	d := map[string]rpcStat{}
	for m, a := range after {
		b := before[m]
		if a.calls != b.calls {
			d[m] = rpcStat{calls: a.calls - b.calls, seconds: a.seconds - b.seconds}
		}
	}
	return d
}

// rpcTotal sums calls and seconds over every method.
func rpcTotal(stats map[string]rpcStat) rpcStat {
	var t rpcStat
	for _, s := range stats {
		t.calls += s.calls
		t.seconds += s.seconds
	}
	return t
}

// formatRPCs renders per-method calls and milliseconds, busiest first.
func formatRPCs(stats map[string]rpcStat) string {
	methods := make([]string, 0, len(stats))
	for m := range stats {
		methods = append(methods, m)
	}
	sort.Slice(methods, func(i, j int) bool {
		return stats[methods[i]].seconds > stats[methods[j]].seconds
	})
	parts := make([]string, len(methods))
	for i, m := range methods {
		parts[i] = fmt.Sprintf("%s %d in %.0f ms", m, stats[m].calls, stats[m].seconds*1000)
	}
	return strings.Join(parts, ", ")
}
