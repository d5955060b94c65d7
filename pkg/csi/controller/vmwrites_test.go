package controller

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestVMWrites: requests for one VM run one at a time, other VMs' beside them; a waiter whose
// context ends gives up, and no slot outlives its users.
func TestVMWrites(t *testing.T) {
	w := newVMWrites()
	var running, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			unlock, err := w.lock(context.Background(), "vm-a")
			if err != nil {
				t.Error(err)
				return
			}
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			running.Add(-1)
			unlock()
			unlock() // idempotent: must not free a later holder
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("%d requests for one VM ran at once, want 1", most.Load())
	}

	hold, err := w.lock(context.Background(), "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := w.lock(context.Background(), "vm-b") // another VM is not held up
	if err != nil {
		t.Fatal(err)
	}
	other()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := w.lock(ctx, "vm-a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock of a held VM with an ending context = %v, want DeadlineExceeded", err)
	}
	hold()
	if len(w.held) != 0 {
		t.Errorf("slots left after every user went: %v", w.held)
	}
}
