package cdi

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// stallPoll is how often a reconciler re-checks a stalled fault point; the injector does not
// notify controllers, and a stall is a test's deliberate hold, so a short poll is cheap.
const stallPoll = 50 * time.Millisecond

// clock remembers when each simulated step of an object started, so reconcilers can wait a
// step's duration with RequeueAfter instead of sleeping. It is the only in-memory state; a
// restarted simulator just restarts the step.
type clock struct {
	mu    sync.Mutex
	start map[string]time.Time
}

func newClock() *clock { return &clock{start: map[string]time.Time{}} }

func clockKey(uid types.UID, step string) string { return string(uid) + "/" + step }

// remaining starts the step on first call and returns how long is left of d.
func (c *clock) remaining(uid types.UID, step string, d time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := clockKey(uid, step)
	t, ok := c.start[k]
	if !ok {
		t = time.Now()
		c.start[k] = t
	}
	return time.Until(t.Add(d))
}

// restart makes the step start over now (after a simulated failure).
func (c *clock) restart(uid types.UID, step string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start[clockKey(uid, step)] = time.Now()
}

// done forgets the step.
func (c *clock) done(uid types.UID, step string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.start, clockKey(uid, step))
}

// forget drops every step of an object that is gone.
func (c *clock) forget(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prefix := string(uid) + "/"
	for k := range c.start {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix {
			delete(c.start, k)
		}
	}
}

// wait returns a result that requeues after the step's remaining time, and whether the
// caller must wait (false once the step's time is up).
func (s *sim) wait(uid types.UID, step string, d time.Duration) (reconcile.Result, bool) {
	if left := s.clock.remaining(uid, step, d); left > 0 {
		return reconcile.Result{RequeueAfter: left}, true
	}
	return reconcile.Result{}, false
}

// stalled reports whether a fault point holds, with the result to requeue on.
func (s *sim) stalled(point string) (reconcile.Result, bool) {
	if s.opts.Faults.Stalled(point) {
		return reconcile.Result{RequeueAfter: stallPoll}, true
	}
	return reconcile.Result{}, false
}

// retryDelay is how long a failed simulated step waits before the retry.
func (s *sim) retryDelay() time.Duration {
	if s.opts.PhaseDelay > 0 {
		return s.opts.PhaseDelay
	}
	return stallPoll
}

// writeStatus re-reads obj from the apiserver, applies mutate and writes the status
// subresource, retrying on conflicts. mutate returns false when nothing needs writing.
func (s *sim) writeStatus(ctx context.Context, obj client.Object, mutate func() bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := s.live.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if !mutate() {
			return nil
		}
		return s.Status().Update(ctx, obj)
	})
}

// writeObject is writeStatus for the main resource (metadata and spec).
func (s *sim) writeObject(ctx context.Context, obj client.Object, mutate func() bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := s.live.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if !mutate() {
			return nil
		}
		return s.Update(ctx, obj)
	})
}
