// Package reconnect brings a client back within seconds of its apiserver answering again after
// an outage, without hammering an apiserver that is still away or just recovering.
//
// Left alone, client-go backs off hard: an informer's reflector waits 0.8 s after its first
// failed list or watch and doubles the wait on every further failure up to 30 s, then jitters
// it by up to 100 % — after a minute-long outage its next attempt is 15–60 s after the apiserver
// is back, and every reflector of every program waits out its own schedule. The callers' retry
// schedules (the upstream service controller's 5 s → 300 s, a workqueue's per-item backoff)
// add theirs on top.
//
// A Gate sits in the client's transport instead. The first request that gets no answer closes
// it; from then on requests wait at the gate (until it opens or their context ends) instead of
// failing, so no caller counts failures or grows a backoff. One prober per gate asks the
// apiserver's /readyz on a bounded exponential backoff with jitter (Backoff: 100 ms doubling to
// 2 s, +0–50 %) and opens the gate when the apiserver says it is ready: waiting requests go at
// once, at most ≈3 s after the apiserver is back, and while it is away a process sends it one
// probe every 2–3 s instead of every reflector retrying on its own.
package reconnect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// Backoff is the probe schedule while the apiserver does not answer. The cap keeps the delay
// between the apiserver's return and the gate opening under 3 s (cap plus jitter); the
// doubling keeps a brief blip (a dropped connection) down to one or two quick probes.
var Backoff = wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.5, Cap: 2 * time.Second, Steps: 1 << 30}

// resetAfter is how long the apiserver must have been answering before a new outage probes
// from Backoff's start again; an apiserver that flaps keeps the schedule it reached.
const resetAfter = 30 * time.Second

// Gate holds requests to one apiserver while it does not answer. Its zero value is not
// usable; build it with New or Config.
type Gate struct {
	name  string
	host  string
	probe func(context.Context) error

	mu      sync.Mutex
	open    chan struct{} // closed while the apiserver answers; a fresh one while it does not
	down    bool
	since   time.Time // when the current outage began
	upSince time.Time // when the last outage ended
	backoff wait.Backoff

	outages atomic.Int64
	probes  atomic.Int64
}

// Config returns a copy of cfg whose requests go through a new Gate for the apiserver at
// cfg.Host, and the gate. name says which apiserver it is in logs ("infra", "tenant").
// Wrap cfg with anything that should count only requests really sent (metrics) before.
func Config(cfg *rest.Config, name string) (*rest.Config, *Gate, error) {
	probeClient, err := rest.HTTPClientFor(rest.CopyConfig(cfg))
	if err != nil {
		return nil, nil, fmt.Errorf("building the %s apiserver probe client: %w", name, err)
	}
	url := cfg.Host + "/readyz"
	g := New(name, cfg.Host, func(ctx context.Context) error { return probeReadyz(ctx, probeClient, url) })
	out := rest.CopyConfig(cfg)
	out.Wrap(g.Wrap)
	return out, g, nil
}

// New returns an open gate that checks the apiserver with probe while it is closed. probe
// returns nil once the apiserver answers and is ready.
func New(name, host string, probe func(context.Context) error) *Gate {
	open := make(chan struct{})
	close(open)
	return &Gate{name: name, host: host, probe: probe, open: open, backoff: Backoff}
}

// probeTimeout bounds one probe: an apiserver that accepts connections but does not answer
// within it counts as away.
const probeTimeout = 2 * time.Second

func probeReadyz(ctx context.Context, c *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	code, err := get(ctx, c, url)
	if err != nil {
		return err
	}
	// /readyz answers 200 when ready and 500 while starting or shutting down. 401/403 (no
	// anonymous access, or a role without it) still prove an apiserver is answering: refusing to
	// open on them would hold every request forever.
	if code >= 500 {
		return fmt.Errorf("%s: %d %s", url, code, http.StatusText(code))
	}
	return nil
}

// get sends a GET and returns the status code.
func get(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Wrap installs the gate in a transport (rest.Config.Wrap).
func (g *Gate) Wrap(rt http.RoundTripper) http.RoundTripper { return &roundTripper{g: g, next: rt} }

// Wait returns when the apiserver answers, at once if it has not been seen away; or ctx's
// error when ctx ends first.
func (g *Gate) Wait(ctx context.Context) error {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return nil
	default:
	}
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the %s apiserver to answer again: %w", g.name, ctx.Err())
	}
}

// Down reports whether the gate is closed.
func (g *Gate) Down() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.down
}

// Outages is how often the gate closed; Probes how many probes it sent.
func (g *Gate) Outages() int64 { return g.outages.Load() }
func (g *Gate) Probes() int64  { return g.probes.Load() }

// observe closes the gate after a request that got no usable answer and starts the prober.
func (g *Gate) observe(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down {
		return
	}
	g.down = true
	g.since = time.Now()
	g.open = make(chan struct{})
	if g.since.Sub(g.upSince) > resetAfter {
		g.backoff = Backoff
	}
	g.outages.Add(1)
	klog.InfoS("Apiserver not answering; holding requests until it is ready again", "apiserver", g.name, "host", g.host, "err", err)
	go g.probeUntilReady()
}

func (g *Gate) probeUntilReady() {
	for {
		g.mu.Lock()
		delay := g.backoff.Step()
		g.mu.Unlock()
		time.Sleep(delay)
		g.probes.Add(1)
		err := g.probe(context.Background())
		if err == nil {
			break
		}
		klog.V(4).InfoS("Apiserver still not ready", "apiserver", g.name, "err", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = false
	g.upSince = time.Now()
	close(g.open)
	klog.InfoS("Apiserver ready again; releasing held requests", "apiserver", g.name, "host", g.host, "after", g.upSince.Sub(g.since).Round(time.Millisecond))
}

type roundTripper struct {
	g    *Gate
	next http.RoundTripper
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := rt.g.Wait(req.Context()); err != nil {
		return nil, err
	}
	resp, err := rt.next.RoundTrip(req)
	if Unanswered(req.Context(), err) {
		rt.g.observe(err)
	}
	return resp, err
}

// WrappedRoundTripper lets client-go reach the transport underneath (k8s.io/apimachinery's
// net.RoundTripperWrapper).
func (rt *roundTripper) WrappedRoundTripper() http.RoundTripper { return rt.next }

// Unanswered reports whether a request's outcome means the apiserver cannot be reached: no
// response at all (connection refused or reset, timeout, TLS failure), unless the caller gave
// up. Every HTTP status is an answer: a 503 comes from an aggregated API whose server is away
// (virt-api) as often as from the apiserver itself, and load balancers in front of apiservers
// pass TLS through, so an apiserver that is away shows as a refused or reset connection. A
// false alarm costs one probe.
func Unanswered(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled)
}
