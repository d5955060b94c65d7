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
	"github.com/tenantcloud/tenantcloud/test/e2e/csicontroller/fixture"
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
	stats.ReportCalls(b, "", harness.CountByKey(events), float64(total), "vol")

	// Clean up (untimed) so the loop devices are free for the next run.
	published[warm] = vmName(0)
	sem := make(chan struct{}, 8)
	for id, vm := range published {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := tn.unpublish(id, vm); err != nil {
				b.Errorf("unpublish %s: %v", id, err)
				return
			}
			if err := tn.delete(id); err != nil {
				b.Errorf("delete %s: %v", id, err)
			}
		})
	}
	wg.Wait()
}
