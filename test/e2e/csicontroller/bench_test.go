package csicontroller_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// BenchmarkVolumeOverhead measures what csi-controller adds on top of the simulators' own work,
// one volume after another and 50 at once: for CreateVolume the call's duration minus the time
// from the DataVolume's creation to its Succeeded, for ControllerPublishVolume the duration
// minus the time from the volume entering the VMI spec to its Ready status (both as an
// independent watch sees them), plus the raw call latencies and the controller's infra API
// requests per volume from the apiserver's audit log. One iteration is one volume created and
// published; a run issues at least as many volumes as it runs at once. Concurrent volumes are
// spread over VMs, at most 5 hot-plugs into one VM at a time (a burst of pods on a cluster,
// not 50 disks racing into one VM, which virt-api serialises by resourceVersion conflicts).
// Goal (issue 5): overhead p99 ≤ 200 ms.
func BenchmarkVolumeOverhead(b *testing.B) {
	for _, conc := range []int{1, 50} {
		b.Run(fmt.Sprintf("concurrent=%d", conc), func(b *testing.B) { benchVolumeOverhead(b, conc) })
	}
}

func benchVolumeOverhead(b *testing.B, conc int) {
	ns := fmt.Sprintf("csi-bench-%d-%s", conc, strings.ToLower(rand.String(4)))
	tn := newTenant(b, ns, "bench", fixtureStorage())
	vms := max(1, conc/5)
	vmName := func(i int) string { return fmt.Sprintf("bench-w%d", i%vms) }
	for i := range vms {
		tn.vm(vmName(i))
	}
	tl := watchTimeline(b, ns)
	// Warm-up, untimed: the first volume starts the controller's informers.
	warm := tn.create("pvc-bench-warm", 16*mib).GetVolumeId()
	tn.mustPublish(warm, vmName(0), nil)

	total := max(b.N, conc)
	var create, publish, createOver, publishOver stats.Latencies
	var (
		mu        sync.Mutex
		published = map[string]string{} // volume → VM
		next      atomic.Int64
		wg        sync.WaitGroup
		failed    atomic.Value
	)
	since := time.Now()
	b.ResetTimer()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= total || failed.Load() != nil {
					return
				}
				start := time.Now()
				rsp, err := tn.cc().CreateVolume(callCtx(b), createReq(fmt.Sprintf("pvc-bench-%d", i), 16*mib))
				if err != nil {
					failed.Store(fmt.Errorf("CreateVolume: %w", err))
					return
				}
				c := time.Since(start)
				id := rsp.GetVolume().GetVolumeId()
				start = time.Now()
				if _, err := tn.cc().ControllerPublishVolume(callCtx(b), &csi.ControllerPublishVolumeRequest{
					VolumeId: id, NodeId: vmName(i), VolumeCapability: rwo}); err != nil {
					failed.Store(fmt.Errorf("ControllerPublishVolume %s: %w", id, err))
					return
				}
				p := time.Since(start)
				create.Add(c)
				publish.Add(p)
				createOver.Add(c - tl.span(b, "dv-created/"+id, "dv-succeeded/"+id))
				publishOver.Add(p - tl.span(b, "vmi-spec/"+id, "vmi-ready/"+id))
				mu.Lock()
				published[id] = vmName(i)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	until := time.Now()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	createOver.Report(b, "create-overhead")
	publishOver.Report(b, "publish-overhead")
	create.Report(b, "create")
	publish.Report(b, "publish")

	events, err := env.Management.AuditEvents(since, func(e harness.AuditEvent) bool {
		return harness.ByUserAgentPrefix(fixture.UserAgent)(e) && e.StageTimestamp.Before(until)
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(events) == 0 {
		// Every create and publish writes to the infra cluster: none audited means the log or
		// the filter is wrong, and the figures below would be a hollow zero.
		b.Fatalf("no audited request by user agent %s since %s", fixture.UserAgent, since.Format(time.RFC3339Nano))
	}
	stats.ReportCalls(b, "", harness.CountByKey(events), float64(total), "vol")

	// Clean up (untimed) so the loop devices are free for the next run: one unplug at a time
	// per VM, as the tenant's kubelet detaches, VMs in parallel.
	published[warm] = vmName(0)
	byVM := map[string][]string{}
	for id, vm := range published {
		byVM[vm] = append(byVM[vm], id)
	}
	for _, ids := range byVM {
		wg.Go(func() {
			for _, id := range ids {
				if err := tn.unpublish(id, published[id]); err != nil {
					b.Errorf("unpublish %s: %v", id, err)
					continue
				}
				if err := tn.delete(id); err != nil {
					b.Errorf("delete %s: %v", id, err)
				}
			}
		})
	}
	wg.Wait()
}

// idleStep is one iteration of BenchmarkIdleVolumes: an observation window, not a wait for
// anything; requests per minute are counted over all of them.
const idleStep = 2 * time.Second

// BenchmarkIdleVolumes runs the real csi-controller binary (least-privileged identity, as
// deployed) for a tenant with 1,000 volumes and nothing happening: one iteration is idleStep of
// watching, and the row gives the controller's requests per minute to the management apiserver
// by verb and resource from its audit log (goal: none — no LIST, no GET, only the informers'
// open watches), its RSS at 1,000 volumes, and the requests of a ListSnapshots call (goal: none,
// it reads the informer cache; through the controller-runtime client an unstructured List is a
// live LIST).
func BenchmarkIdleVolumes(b *testing.B) {
	needSims(b)
	const n, workers = 1000, 25
	ns := "csi-idle-" + strings.ToLower(rand.String(4))
	user := "tenantcloud:csi-controller:" + ns
	if err := createNamespace(testCtx(b), ns); err != nil {
		b.Fatal(err)
	}
	_, kubeconfig := grantInfraRole(b, ns, user)
	bc := runController(b, ns, "idle", kubeconfig)

	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && failed.Load() == nil; i = int(next.Add(1) - 1) {
				rsp, err := bc.cc.CreateVolume(callCtx(b), createReq(fmt.Sprintf("pvc-idle-%04d", i), 16*mib))
				if err != nil {
					failed.Store(fmt.Errorf("CreateVolume %d: %w", i, err))
					return
				}
				ids[i] = rsp.GetVolume().GetVolumeId()
			}
		})
	}
	wg.Wait()
	b.Cleanup(func() { deleteVolumes(b, bc.cc, ids, workers) })
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}

	// The goal below is zero requests, so a zero must mean none, not a filter that matches
	// nothing: the n creates just made are in the log under the same user.
	if created, err := env.Management.AuditEvents(time.Time{}, harness.ByUser(user)); err != nil || len(created) == 0 {
		b.Fatalf("no audited request by %s after %d creates (%v)", user, n, err)
	}
	since := time.Now()
	for b.Loop() {
		<-time.After(idleStep)
	}
	until := time.Now()
	idle, err := env.Management.AuditEvents(since, func(e harness.AuditEvent) bool {
		return harness.ByUser(user)(e) && e.StageTimestamp.Before(until)
	})
	if err != nil {
		b.Fatal(err)
	}
	stats.ReportCalls(b, "idle-", harness.CountByKey(idle), until.Sub(since).Minutes(), "min")
	b.ReportMetric(float64(len(idle))/until.Sub(since).Minutes(), "idle-calls/min")
	stats.ReportRSS(b, "csi-controller", bc.cmd.Process.Pid)

	const lists = 5
	start := time.Now()
	for range lists {
		if _, err := bc.cc.ListSnapshots(callCtx(b), &csi.ListSnapshotsRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	end := time.Now()
	calls, err := env.Management.AuditEvents(start, func(e harness.AuditEvent) bool {
		return harness.ByUser(user)(e) && e.StageTimestamp.Before(end)
	})
	if err != nil {
		b.Fatal(err)
	}
	stats.ReportCalls(b, "listsnapshots-", harness.CountByKey(calls), lists, "op")
	b.ReportMetric(float64(len(calls))/lists, "listsnapshots-calls/op")
}

// deleteVolumes deletes volumes (empty IDs skipped), workers at a time.
func deleteVolumes(tb testing.TB, cc csi.ControllerClient, ids []string, workers int) {
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for _, id := range ids {
		if id == "" {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := cc.DeleteVolume(callCtx(tb), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
				tb.Errorf("DeleteVolume %s: %v", id, err)
			}
		})
	}
	wg.Wait()
}
