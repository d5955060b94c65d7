package autoscaler_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
)

const (
	// bulkBase and bulkBurst: a group of 2 busy nodes grown by 20 pending pods to 22 and back.
	bulkBase, bulkBurst = 2, 20
	// bulkRunsEnv sets how many cycles TestBulkScaleDown runs; 1 by default (≈1 min).
	// Issue 21's acceptance is 20 in a row.
	bulkRunsEnv = "AUTOSCALER_BULK_RUNS"
	// caLoop is one cluster-autoscaler loop at --scan-interval=1s, with room for a loaded
	// 2-core machine. The failure it catches costs minutes: CA only retries a stuck node
	// once its deletion taint expires (5 min).
	caLoop = 5 * time.Second
)

// bulkWorld is the group of issue 21 with the real cluster-autoscaler, the real
// kube-scheduler, the autoscaler-provider binary and the simulated Cluster API.
type bulkWorld struct {
	w     *world
	md    *clusterv1.MachineDeployment
	p     *process
	caLog string
}

func startBulk(tb testing.TB, ctx context.Context) *bulkWorld {
	tb.Helper()
	caBin := realCA(tb)
	providerBin := buildProvider(tb, ctx)
	w := startWorld(tb, ctx)
	md := w.createGroup(bulkBase, bulkBase, bulkBase+bulkBurst)
	w.eventually("the group's nodes", func() bool { return len(w.readyNodes()) == bulkBase })
	b := &bulkWorld{w: w, md: md, p: runProvider(tb, providerBin, w.ns, simCluster)}
	if err := startScheduler(context.Background()); err != nil {
		tb.Fatal(err)
	}
	// Busy base nodes: only the burst's nodes are ever empty.
	var fillers []*corev1.Pod
	for i := range bulkBase {
		fillers = append(fillers, w.newPod(fmt.Sprintf("filler-%d", i)))
	}
	w.eventually("the filler pods to be scheduled", func() bool {
		for _, pod := range fillers {
			if !w.scheduled(pod) {
				return false
			}
		}
		return true
	})
	b.caLog = runCA(tb, caBin, b.p.grpcAddr)
	return b
}

// bulkCycle is what one cycle measured, from the moment the burst's pods were deleted.
type bulkCycle struct {
	// target: replicas at bulkBase and no Machine left marked that is not being deleted;
	// gone: only bulkBase Machines left at all.
	target, gone time.Duration
	// lastDelete is when the provider last answered a DeleteNodes call.
	lastDelete time.Duration
	calls      int
}

// cycle grows the group by bulkBurst pods, deletes them, and waits until cluster-autoscaler
// has scaled the group back to bulkBase and every Machine of the burst is gone.
func (b *bulkWorld) cycle(run int) bulkCycle {
	w := b.w
	w.t.Helper()
	var pods []*corev1.Pod
	for i := range bulkBurst {
		pods = append(pods, w.newPod(fmt.Sprintf("burst-%d-%d", run, i)))
	}
	w.long(b.p, b.caLog, "cluster-autoscaler to grow the group and every burst pod to be scheduled", 3*time.Minute, func() bool {
		if w.mdReplicas(b.md) != bulkBase+bulkBurst || len(w.readyNodes()) != bulkBase+bulkBurst {
			return false
		}
		for _, pod := range pods {
			if !w.scheduled(pod) {
				return false
			}
		}
		return true
	})
	for _, pod := range pods {
		if err := w.tenant.Delete(w.ctx, pod, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
			w.t.Fatal(err)
		}
	}
	start := time.Now()
	deleteCalls := func() int {
		n := 0
		for k, v := range grpcCalls(w.t, b.p.metricsAddr) {
			if strings.HasPrefix(k, "NodeGroupDeleteNodes/") {
				n += v
			}
		}
		return n
	}
	var c bulkCycle
	before := deleteCalls()
	seen := before
	// Polled often, so that lastDelete is accurate to a poll; 90 s is far more than a healthy
	// scale-down takes and far less than the 5 min after which CA retries a stuck node.
	err := wait.PollUntilContextTimeout(w.ctx, 50*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		now := time.Since(start)
		if n := deleteCalls(); n != seen {
			seen, c.lastDelete = n, now
		}
		machines, marked := b.machines()
		if c.target == 0 && w.mdReplicas(b.md) == bulkBase && marked == 0 && seen > before {
			c.target = now
		}
		if c.target != 0 && machines == bulkBase {
			c.gone = now
			return true, nil
		}
		return false, nil
	})
	c.calls = seen - before
	if err != nil {
		machines, marked := b.machines()
		logs, _ := os.ReadFile(b.caLog)
		w.t.Fatalf("run %d: not back at %d replicas with the burst's Machines gone within 90 s: replicas %d, %d Machines, %d marked and not deleting; "+
			"%d DeleteNodes calls, the last %s after the pods went; provider calls %v\nprovider log:\n%s\ncluster-autoscaler log (tail):\n%s",
			run, bulkBase, w.mdReplicas(b.md), machines, marked, c.calls, c.lastDelete.Round(time.Millisecond),
			grpcCalls(w.t, b.p.metricsAddr), tail(b.p.logs.output(), 80), tail(string(logs), 150))
	}
	return c
}

// machines counts the group's Machines, and those carrying a deletion mark while not being
// deleted (a mark nobody acts on).
func (b *bulkWorld) machines() (all, marked int) {
	var list clusterv1.MachineList
	if err := b.w.mgmt.List(b.w.ctx, &list, client.InNamespace(b.w.ns),
		client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: b.md.Name}); err != nil {
		return -1, -1
	}
	for _, m := range list.Items {
		_, ok := m.Annotations[autoscaler.AnnotationDeleteMachine]
		if ok && m.DeletionTimestamp.IsZero() {
			marked++
		}
	}
	return len(list.Items), marked
}

// TestBulkScaleDown is issue 21: the real cluster-autoscaler with aggressive timings grows a
// group from 2 to 22 nodes for 20 pending pods, and once they are deleted removes the 20 empty
// nodes at once, in parallel DeleteNodes calls (mostly one node each; CA sometimes batches
// two). Every cycle must end at 2 replicas with no marked Machine left within one CA loop of
// the last DeleteNodes answer (before the fix, 1–3 Machines per run stayed marked and replicas
// stayed that much too high until CA's 5-minute retry). AUTOSCALER_BULK_RUNS repeats the cycle
// on the same group to catch the interleaving.
func TestBulkScaleDown(t *testing.T) {
	runs := 1
	if v := os.Getenv(bulkRunsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", bulkRunsEnv, v)
		}
		runs = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(runs)*3*time.Minute+2*time.Minute)
	t.Cleanup(cancel)
	b := startBulk(t, ctx)
	for run := range runs {
		c := b.cycle(run)
		t.Logf("run %d: %d DeleteNodes calls, the last %s after the pods went; replicas at %d and no Machine left marked after %s, Machines gone after %s",
			run, c.calls, c.lastDelete.Round(time.Millisecond), bulkBase, c.target.Round(time.Millisecond), c.gone.Round(time.Millisecond))
		if late := c.target - c.lastDelete; late > caLoop {
			t.Errorf("run %d: target reached %s after the last DeleteNodes, more than one loop (%s)", run, late.Round(time.Millisecond), caLoop)
		}
	}
}

// BenchmarkBulkScaleDown measures issue 21's scenario: from the moment 20 nodes of a group of
// 22 are emptied to replicas at 2 with no Machine left marked (target) and to the burst's
// Machines gone (gone), with the real cluster-autoscaler at --scan-interval=1s; and the
// provider's share, target after the last DeleteNodes answer. One iteration
// is one 2 → 22 → 2 cycle (≈30 s, most of it the scale-up, which is not measured): run with
// -benchtime=3x.
func BenchmarkBulkScaleDown(b *testing.B) {
	// Cancelled by a cleanup, not a defer: the teardown needs the simulator running.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	bw := startBulk(b, ctx)
	var target, gone, afterCall stats.Latencies
	run := 0
	for b.Loop() {
		c := bw.cycle(run)
		run++
		target.Add(c.target)
		gone.Add(c.gone)
		afterCall.Add(c.target - c.lastDelete)
	}
	target.Report(b, "bulk-scale-down-target")
	gone.Report(b, "bulk-scale-down-gone")
	afterCall.Report(b, "bulk-target-after-last-call")
}
