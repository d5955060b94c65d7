package autoscaler_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/bench/stats"
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
// provider-rpc-ms, the time it spent answering cluster-autoscaler's calls (its gRPC duration
// histogram's sum over the run), provider-share-% (that over scale-up-100-ms),
// provider-rpc-calls, and scale-writes, its /scale writes (audit log); and the RSS of
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
	var rpcSeconds float64
	var rpcCalls, scaleWrites int
	b.ResetTimer()
	for range b.N {
		r := scaleUp100(b, ctx, caBin, providerBin)
		total, replicas = total+r.total, replicas+r.replicas
		rpcSeconds += r.rpcSeconds
		rpcCalls += r.rpcCalls
		scaleWrites += r.scaleWrites
	}
	n := float64(b.N)
	b.ReportMetric(float64(total.Milliseconds())/n, "scale-up-100-ms")
	b.ReportMetric(float64(replicas.Milliseconds())/n, "scale-up-100-replicas-ms")
	b.ReportMetric(rpcSeconds*1000/n, "provider-rpc-ms")
	// The provider's answers are on cluster-autoscaler's path (it calls one at a time), so
	// their sum over the scale-up is an upper bound of what the provider added to it.
	b.ReportMetric(100*rpcSeconds/total.Seconds(), "provider-share-%")
	b.ReportMetric(float64(rpcCalls)/n, "provider-rpc-calls")
	b.ReportMetric(float64(scaleWrites)/n, "scale-writes")
}

type scaleUpResult struct {
	total, replicas time.Duration
	rpcSeconds      float64
	rpcCalls        int
	scaleWrites     int
}

func scaleUp100(b *testing.B, ctx context.Context, caBin, providerBin string) scaleUpResult {
	b.StopTimer()
	w := startWorld(b, ctx)
	md := w.createGroup(0, 0, scaleUpNodes)
	w.templateCapacity()
	p := runProvider(b, providerBin, w.ns, simCluster)
	// Nodes that registered before the scheduler placed their pod are empty for a moment: with
	// the shared flags' 1 s scale-down timings cluster-autoscaler would remove them again.
	caLog, caPid := startCA(b, caBin, p.grpcAddr, "--max-node-provision-time=15m", "--scale-down-enabled=false")
	rpcBefore, callsBefore := grpcSeconds(b, p.metricsAddr)

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
	b.StopTimer()
	// Both programs' memory with 100 Nodes, 100 Machines and 100 pods cached: what the
	// charts' limits for them must hold (deploy/README.md#memory).
	stats.ReportRSS(b, "cluster-autoscaler", caPid)
	stats.ReportRSS(b, "autoscaler-provider", p.cmd.Process.Pid)

	rpcAfter, callsAfter := grpcSeconds(b, p.metricsAddr)
	r.rpcSeconds, r.rpcCalls = rpcAfter-rpcBefore, callsAfter-callsBefore
	events, err := env.Management.AuditEvents(start, func(e harness.AuditEvent) bool {
		return strings.HasPrefix(e.UserAgent, "tenantcloud-autoscaler-provider") && e.Key() == "update machinedeployments/scale" &&
			e.ResponseStatus != nil && e.ResponseStatus.Code < 300
	})
	if err != nil {
		b.Fatal(err)
	}
	r.scaleWrites = len(events)
	b.Logf("0 → %d: replicas after %s, all Nodes Ready and pods scheduled after %s; provider %d calls, %.0f ms answering them (%s); %d /scale writes",
		scaleUpNodes, r.replicas.Round(time.Millisecond), r.total.Round(time.Millisecond), r.rpcCalls, r.rpcSeconds*1000,
		harness.FormatCounts(grpcCalls(b, p.metricsAddr)), r.scaleWrites)

	// Empty the group untimed, with room for 100 Nodes to go on a busy machine.
	for _, pod := range pods {
		_ = w.tenant.Delete(ctx, pod, client.GracePeriodSeconds(0))
	}
	if err := w.mgmt.Delete(ctx, md); client.IgnoreNotFound(err) != nil {
		b.Fatal(err)
	}
	w.long(p, caLog, "the group's Machines to go", 10*time.Minute, func() bool {
		var machines clusterv1.MachineList
		err := w.mgmt.List(ctx, &machines, client.InNamespace(w.ns), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: md.Name})
		return err == nil && len(machines.Items) == 0
	})
	return r
}

// grpcSeconds reads the provider's gRPC duration histogram: the total seconds spent in calls,
// and how many calls, over every method.
func grpcSeconds(tb testing.TB, metricsAddr string) (float64, int) {
	tb.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var seconds float64
	var calls int
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(name, "tenantcloud_autoscaler_grpc_request_duration_seconds_sum{"):
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				tb.Fatalf("metric %q: %v", line, err)
			}
			seconds += v
		case strings.HasPrefix(name, "tenantcloud_autoscaler_grpc_request_duration_seconds_count{"):
			v, err := strconv.Atoi(value)
			if err != nil {
				tb.Fatalf("metric %q: %v", line, err)
			}
			calls += v
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return seconds, calls
}
