package outage

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/bench/stats"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// recoveryWindow is the time after the apiserver's return over which the request rate of
// tenantcloud's components is taken: the convergence goal (issue 17: ≤ 10 s).
const recoveryWindow = 10 * time.Second

var recoveryRuns atomic.Int32

// BenchmarkOutageRecovery (issue 17): the management kube-apiserver is killed for
// OutageDuration while b.N operations are asked for — round robin: a LoadBalancer Service
// created, one deleted, a volume created — plus one node-group scale-up through
// autoscaler-provider; then it starts again on the same endpoint. Each operation's
// convergence is timed from the apiserver's return (its first answered request, from the
// audit log) to the operation done (the tenant Service
// has MetalLB's address, the Service and its infra Service are gone, CreateVolume succeeded,
// the provider reports the new target size): converge-*. A LoadBalancer created after the
// return waits for the real MetalLB controller too, which reconnects on client-go's own
// backoff (15–60 s after a minute's outage, not ours to shorten); converge-excl-metallb-*
// leaves that wait out (from the infra Service's creation, or the return, to MetalLB's status
// write, both from the audit log). recovery-*-req/s: the requests each component sent in the
// recoveryWindow after the return (audit log). One run is one outage: make bench's 20x makes
// two (Go runs 1x first), ≈ 3 min.
func BenchmarkOutageRecovery(b *testing.B) {
	needWorld(b)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("rec%d", recoveryRuns.Add(1))
	ns := tenantNamespace(b, ctx, "recovery-"+prefix)

	progs := startPrograms(b, ctx, prefix)
	cc, prov, md, group := progs.cc, progs.prov, progs.md, progs.group

	// The LoadBalancers to delete during the outage stand before it.
	const (
		lbCreate = iota
		lbDelete
		volumeCreate
		kinds
	)
	var standing []*corev1.Service
	setup := newTracker(ctx)
	for i := range b.N {
		if i%kinds == lbDelete {
			svc := createLB(b, ctx, ns, fmt.Sprintf("standing-%d", i), nil)
			standing = append(standing, svc)
			setup.track("lb "+svc.Name+" ready", lbReady(svc))
		}
	}
	setup.wait(b)
	if b.Failed() {
		b.FailNow()
	}

	b.ResetTimer()
	if err := env.Management.KillAPIServer(ctx); err != nil {
		b.Fatal(err)
	}
	up := false
	defer func() {
		if !up {
			if err := env.Management.StartAPIServer(context.Background()); err != nil {
				b.Errorf("restarting the management apiserver after a failed benchmark: %v", err)
			}
		}
	}()
	stopped := time.Now()
	tr := newTracker(ctx)
	kindOf, infraOf := map[string]string{}, map[string]string{}
	var created, volumes []string
	for i := range b.N {
		switch i % kinds {
		case lbCreate:
			svc := createLB(b, ctx, ns, fmt.Sprintf("during-%d", i), nil)
			name := "lb " + svc.Name + " ready"
			tr.track(name, lbReady(svc))
			kindOf[name] = "lb-create"
			key, err := infraKey(svc)
			if err != nil {
				b.Fatal(err)
			}
			created = append(created, key.Name)
			infraOf[name] = key.Name
		case lbDelete:
			svc := standing[i/kinds]
			deleteLB(b, ctx, svc)
			name := "lb " + svc.Name + " gone"
			tr.track(name, lbGone(svc))
			kindOf[name] = "lb-delete"
		case volumeCreate:
			vol := fmt.Sprintf("%s-vol-%d", prefix, i)
			volumes = append(volumes, vol)
			name := "create " + vol
			tr.call(name, createVolume(cc, vol))
			kindOf[name] = "volume-create"
		}
	}
	tr.call("increase "+md.Name, scaleUpTo(prov, group, 1))
	tr.track("target of "+md.Name+" is 1", targetIs(prov, group, 1))
	kindOf["increase "+md.Name], kindOf["target of "+md.Name+" is 1"] = "scale-up", "scale-up"

	select {
	case <-time.After(time.Until(stopped.Add(OutageDuration))):
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	}
	restarting := time.Now()
	if err := env.Management.StartAPIServer(ctx); err != nil {
		b.Fatal(err)
	}
	up = true
	tr.wait(b)
	b.StopTimer()
	if b.Failed() {
		b.FailNow()
	}
	// The apiserver is back when it answers its first request: StartAPIServer returns later
	// (it waits for /healthz, and the machine is busy), by which time clients that probe
	// /readyz (pkg/reconnect) may be done already.
	restored := firstAnswer(b, restarting)

	metallb := metallbWaits(b, restored, created)
	var all, exclMetalLB stats.Latencies
	byKind := map[string]*stats.Latencies{}
	for _, o := range tr.done() {
		d := max(o.finished.Sub(restored), 0)
		all.Add(d)
		exclMetalLB.Add(max(d-metallb[infraOf[o.name]], 0))
		kind := kindOf[o.name]
		if byKind[kind] == nil {
			byKind[kind] = &stats.Latencies{}
		}
		byKind[kind].Add(d)
	}
	all.Report(b, "converge")
	exclMetalLB.Report(b, "converge-excl-metallb")
	for kind, l := range byKind {
		b.ReportMetric(float64(l.Quantile(1).Milliseconds()), "converge-"+kind+"-max-ms")
	}
	for name, keep := range map[string]func(harness.AuditEvent) bool{
		"ccm":                 harness.ByUser(ccmInfraUser),
		"csi-controller":      harness.ByUserAgentPrefix(fixture.UserAgent),
		"autoscaler-provider": harness.ByUserAgentPrefix(providerUserAgent),
	} {
		events, err := env.Management.AuditEvents(restored, func(e harness.AuditEvent) bool {
			return keep(e) && e.StageTimestamp.Before(restored.Add(recoveryWindow))
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(events))/recoveryWindow.Seconds(), "recovery-"+name+"-req/s")
	}
	b.Logf("management apiserver outage of %s, %d operations asked for during it; MetalLB's waits %v; after the return:%s",
		OutageDuration, tr.count(), metallb, tr.summarySince(restored))

	// Leave the tenant as found.
	cleanup := newTracker(ctx)
	for i := range b.N {
		if i%kinds == lbCreate {
			svc := &corev1.Service{}
			svc.Namespace, svc.Name = ns, fmt.Sprintf("during-%d", i)
			if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
				b.Fatal(err)
			}
			deleteLB(b, ctx, svc)
			cleanup.track("lb "+svc.Name+" gone", lbGone(svc))
		}
	}
	for _, vol := range volumes {
		cleanup.call("delete "+vol, deleteVolume(cc, volID(vol)))
	}
	cleanup.wait(b)
}

// firstAnswer is when the management apiserver finished its first request at or after t.
func firstAnswer(tb testing.TB, t time.Time) time.Time {
	tb.Helper()
	events, err := env.Management.AuditEvents(t, nil)
	if err != nil {
		tb.Fatal(err)
	}
	first := time.Now()
	for _, e := range events {
		if e.StageTimestamp.Before(first) {
			first = e.StageTimestamp
		}
	}
	return first
}

// metallbWaits returns, per "lb <name> ready" operation, how long the real MetalLB took after
// the apiserver's return to give the infra Service (named in infraNames) its address: from
// the later of the return and the ccm's create of the infra Service to MetalLB's first status
// write, both from the audit log.
func metallbWaits(tb testing.TB, restored time.Time, infraNames []string) map[string]time.Duration {
	tb.Helper()
	want := map[string]bool{}
	for _, n := range infraNames {
		want[n] = true
	}
	events, err := env.Management.AuditEvents(restored, func(e harness.AuditEvent) bool {
		return succeeded(e) && e.ObjectRef != nil && e.ObjectRef.Resource == "services" && e.ObjectRef.Namespace == infraNS && want[e.ObjectRef.Name]
	})
	if err != nil {
		tb.Fatal(err)
	}
	createdAt, assignedAt := map[string]time.Time{}, map[string]time.Time{}
	for _, e := range events {
		switch {
		case e.Verb == "create" && e.User.Username == ccmInfraUser:
			createdAt[e.ObjectRef.Name] = e.StageTimestamp
		case e.Verb == "update" && e.ObjectRef.Subresource == "status" && strings.HasPrefix(e.UserAgent, "metallb-controller"):
			if _, seen := assignedAt[e.ObjectRef.Name]; !seen {
				assignedAt[e.ObjectRef.Name] = e.StageTimestamp
			}
		}
	}
	out := map[string]time.Duration{}
	for _, o := range infraNames {
		at, ok := assignedAt[o]
		if !ok {
			continue // assigned before the outage
		}
		from := restored
		if c, ok := createdAt[o]; ok && c.After(from) {
			from = c
		}
		out[o] = max(at.Sub(from), 0)
	}
	return out
}
