package csicontroller_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/apimachinery/pkg/watch"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestOverhead measures what csi-controller adds on top of the simulators' own work: for
// CreateVolume, the call's duration minus the time from the DataVolume's creation to its
// Succeeded (as an independent watch sees them); for ControllerPublishVolume, the duration minus
// the time from the volume entering the VMI spec to its Ready status. The rest is request
// handling, API round trips and event delivery. Sequential and concurrent. The numbers are logged
// for the report; what is asserted is that nothing polls (no LIST after warm-up).
func TestOverhead(t *testing.T) {
	tn := newTenant(t, "csi-overhead", "overhead", fixtureStorage())
	tn.vm("ovh-w1")
	tl := watchTimeline(t, tn.ns)

	const n = 8
	var createOver, publishOver []time.Duration
	var warm time.Time // after the first volume: informers are running
	for i := range n {
		if i == 1 {
			warm = time.Now()
		}
		name := fmt.Sprintf("pvc-ovh-%d", i)
		start := time.Now()
		id := tn.create(name, 16*mib).GetVolumeId()
		took := time.Since(start)
		createOver = append(createOver, took-tl.span(t, "dv-created/"+id, "dv-succeeded/"+id))

		start = time.Now()
		tn.mustPublish(id, "ovh-w1", nil)
		took = time.Since(start)
		publishOver = append(publishOver, took-tl.span(t, "vmi-spec/"+id, "vmi-ready/"+id))
	}
	t.Logf("sequential, phase delay %s: CreateVolume overhead %s; ControllerPublishVolume overhead %s",
		phaseDelay, summary(createOver), summary(publishOver))

	// Concurrent: n volumes created and published at once.
	var mu sync.Mutex
	var concCreate, concPublish []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("pvc-ovh-conc-%d", i)
			start := time.Now()
			rsp, err := tn.cc().CreateVolume(callCtx(t), createReq(name, 16*mib))
			if err != nil {
				errs <- fmt.Errorf("CreateVolume %s: %w", name, err)
				return
			}
			id := rsp.GetVolume().GetVolumeId()
			c := time.Since(start)
			start = time.Now()
			if _, err := tn.cc().ControllerPublishVolume(callCtx(t), &csi.ControllerPublishVolumeRequest{
				VolumeId: id, NodeId: "ovh-w1", VolumeCapability: rwo}); err != nil {
				errs <- fmt.Errorf("publish %s: %w", id, err)
				return
			}
			p := time.Since(start)
			mu.Lock()
			concCreate = append(concCreate, c-tl.span(t, "dv-created/"+id, "dv-succeeded/"+id))
			concPublish = append(concPublish, p-tl.span(t, "vmi-spec/"+id, "vmi-ready/"+id))
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d concurrent: CreateVolume overhead %s; ControllerPublishVolume overhead %s",
		n, summary(concCreate), summary(concPublish))
	// Waits are event-driven: once its informers run, the controller must not LIST anything.
	// A count from the apiserver's audit log, so it cannot flake on a slow machine.
	events, err := env.Management.AuditEvents(warm, harness.ByUserAgentPrefix(fixture.UserAgent))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 {
		t.Fatal("no controller requests in the audit log; is the fixture's user agent set?")
	}
	for _, e := range events {
		if e.Verb == "list" {
			t.Errorf("the controller polled with %s at %s; waits must come from watches", e.Key(), e.StageTimestamp.Format(time.RFC3339Nano))
		}
	}
	t.Logf("controller API requests after warm-up for %d volumes: %s", 2*n-1, harness.FormatCounts(harness.CountByKey(events)))
}

func summary(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return "n/a"
	}
	p := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Millisecond) }
	return fmt.Sprintf("p50 %s, max %s", p(0.5), s[len(s)-1].Round(time.Millisecond))
}

// timeline records when an independent watch first saw each milestone.
type timeline struct {
	mu   sync.Mutex
	seen map[string]time.Time
	cond *sync.Cond
}

func watchTimeline(t testing.TB, ns string) *timeline {
	t.Helper()
	wc, err := client.NewWithWatch(env.Management.Config, client.Options{Scheme: kube().Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &timeline{seen: map[string]time.Time{}}
	tl.cond = sync.NewCond(&tl.mu)
	mark := func(key string) {
		tl.mu.Lock()
		if _, ok := tl.seen[key]; !ok {
			tl.seen[key] = time.Now()
			tl.cond.Broadcast()
		}
		tl.mu.Unlock()
	}
	dvw, err := wc.Watch(ctx, &cdiv1.DataVolumeList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	vmiw, err := wc.Watch(ctx, &kubevirtv1.VirtualMachineInstanceList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev := range dvw.ResultChan() {
			if dv, ok := ev.Object.(*cdiv1.DataVolume); ok && ev.Type != watch.Deleted {
				mark("dv-created/" + dv.Name)
				if dv.Status.Phase == cdiv1.Succeeded {
					mark("dv-succeeded/" + dv.Name)
				}
			}
		}
	})
	wg.Go(func() {
		for ev := range vmiw.ResultChan() {
			if vmi, ok := ev.Object.(*kubevirtv1.VirtualMachineInstance); ok && ev.Type != watch.Deleted {
				for _, v := range vmi.Spec.Volumes {
					mark("vmi-spec/" + v.Name)
				}
				for _, st := range vmi.Status.VolumeStatus {
					if st.Phase == kubevirtv1.VolumeReady {
						mark("vmi-ready/" + st.Name)
					}
				}
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		dvw.Stop()
		vmiw.Stop()
		wg.Wait()
	})
	return tl
}

// span is the time between two milestones, waiting (on the watch) until both were seen.
func (tl *timeline) span(t testing.TB, from, to string) time.Duration {
	deadline := time.AfterFunc(30*time.Second, func() { tl.mu.Lock(); tl.cond.Broadcast(); tl.mu.Unlock() })
	defer deadline.Stop()
	start := time.Now()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for {
		a, okA := tl.seen[from]
		b, okB := tl.seen[to]
		if okA && okB {
			return b.Sub(a)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("the watch never saw %s and %s", from, to)
			return 0
		}
		tl.cond.Wait()
	}
}
