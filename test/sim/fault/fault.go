// Package fault lets tests make the simulator misbehave the way real infrastructure does:
// slow, failing for a while, or stuck in a phase. Controllers and the virt-api server consult
// one Injector at each named point.
//
// Point names are "<area>/<step>", e.g. "virtapi/addvolume", "hotplug/AttachedToNode",
// "vmi/Running", "datavolume/Succeeded", "machine/Running".
package fault

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Error is what an injected failure returns, so callers can tell it from a real one.
type Error struct{ Point string }

func (e *Error) Error() string { return fmt.Sprintf("injected failure at %s", e.Point) }

// Injector holds the faults currently armed. The zero value is not usable; use New. A nil
// *Injector injects nothing, so production-like paths need no checks.
type Injector struct {
	mu       sync.Mutex
	latency  map[string]time.Duration
	failNext map[string]int
	stalled  map[string]bool
	hits     map[string]int
	changed  chan struct{} // closed and replaced on every change, to wake stalled waiters
}

// New returns an Injector with nothing armed.
func New() *Injector {
	return &Injector{
		latency:  map[string]time.Duration{},
		failNext: map[string]int{},
		stalled:  map[string]bool{},
		hits:     map[string]int{},
		changed:  make(chan struct{}),
	}
}

func (i *Injector) notifyLocked() {
	close(i.changed)
	i.changed = make(chan struct{})
}

// SetLatency delays every pass through point by d (0 removes it).
func (i *Injector) SetLatency(point string, d time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if d <= 0 {
		delete(i.latency, point)
	} else {
		i.latency[point] = d
	}
	i.notifyLocked()
}

// FailNext makes the next n passes through point fail.
func (i *Injector) FailNext(point string, n int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.failNext[point] += n
	i.notifyLocked()
}

// Stall holds point: work reaching it does not progress until Release.
func (i *Injector) Stall(point string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.stalled[point] = true
	i.notifyLocked()
}

// Release lets a stalled point progress again.
func (i *Injector) Release(point string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.stalled, point)
	i.notifyLocked()
}

// Hits reports how many times point was passed (including failed and stalled passes).
func (i *Injector) Hits(point string) int {
	if i == nil {
		return 0
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.hits[point]
}

// Stalled reports whether point is held; reconcilers use it to requeue without progress.
func (i *Injector) Stalled(point string) bool {
	if i == nil {
		return false
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.stalled[point]
}

// Check passes point: it counts the hit, waits out any latency (or ctx), then returns an
// *Error if a failure is armed. It does not block on a stall; see Stalled and Wait.
func (i *Injector) Check(ctx context.Context, point string) error {
	if i == nil {
		return nil
	}
	i.mu.Lock()
	i.hits[point]++
	d := i.latency[point]
	fail := i.failNext[point] > 0
	if fail {
		i.failNext[point]--
	}
	i.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if fail {
		return &Error{Point: point}
	}
	return nil
}

// Wait is Check for synchronous handlers: it also blocks while point is stalled.
func (i *Injector) Wait(ctx context.Context, point string) error {
	if i == nil {
		return nil
	}
	for {
		i.mu.Lock()
		stalled, changed := i.stalled[point], i.changed
		i.mu.Unlock()
		if !stalled {
			return i.Check(ctx, point)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
