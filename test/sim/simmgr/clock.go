package simmgr

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// StepClock remembers when a simulator first saw each object in its current step, so a step
// can last a phase delay without sleeping: the reconciler asks how long is left and requeues
// after that. Object timestamps cannot serve: metav1.Time has one-second resolution and test
// delays are tens of milliseconds. A simulator restart merely restarts the current step.
type StepClock struct {
	mu    sync.Mutex
	steps map[types.NamespacedName]clockEntry
	now   func() time.Time
}

type clockEntry struct {
	uid   types.UID
	step  string
	since time.Time
}

// NewStepClock returns an empty clock.
func NewStepClock() *StepClock {
	return &StepClock{steps: map[types.NamespacedName]clockEntry{}, now: time.Now}
}

// Remaining returns how much of d is left for the object (key, uid) in step, starting the
// clock if the object just entered step.
func (c *StepClock) Remaining(key types.NamespacedName, uid types.UID, step string, d time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	e, ok := c.steps[key]
	if !ok || e.uid != uid || e.step != step {
		e = clockEntry{uid: uid, step: step, since: now}
		c.steps[key] = e
	}
	return max(d-now.Sub(e.since), 0)
}

// UID returns the UID last seen under key, for cleanup after the object is gone.
func (c *StepClock) UID(key types.NamespacedName) (types.UID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.steps[key]
	return e.uid, ok
}

// Forget drops key's entry.
func (c *StepClock) Forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.steps, key)
}
