package controller

import (
	"context"
	"sync"
)

// vmWrites admits one hot-plug request per VM at a time. KubeVirt applies a request by
// rewriting the VM (and its running instance) under optimistic concurrency, so requests for one
// VM that arrive together (a pod with several volumes, a burst of pods on a node) conflict in
// virt-api and are retried there with backoff, each retry another round of reads and writes on
// a busy apiserver. Queued here they each apply at the first attempt. Only the request is
// serialised: the waits for the disks to become Ready run side by side.
type vmWrites struct {
	mu   sync.Mutex
	held map[string]*vmSlot
}

type vmSlot struct {
	sem   chan struct{}
	users int // holders and waiters; the slot goes when it drops to zero
}

func newVMWrites() *vmWrites { return &vmWrites{held: map[string]*vmSlot{}} }

// lock waits until no other request for vm runs, or ctx ends.
func (w *vmWrites) lock(ctx context.Context, vm string) (unlock func(), err error) {
	w.mu.Lock()
	slot := w.held[vm]
	if slot == nil {
		slot = &vmSlot{sem: make(chan struct{}, 1)}
		w.held[vm] = slot
	}
	slot.users++
	w.mu.Unlock()
	leave := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if slot.users--; slot.users == 0 {
			delete(w.held, vm)
		}
	}
	select {
	case slot.sem <- struct{}{}:
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-slot.sem
			leave()
		})
	}, nil
}
