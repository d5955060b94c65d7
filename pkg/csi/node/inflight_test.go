package node

import (
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestInFlight(t *testing.T) {
	f := newInFlight()
	release, err := f.acquire("vol-1", "NodeStageVolume")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.acquire("vol-1", "NodePublishVolume")
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "NodeStageVolume on volume \"vol-1\"") {
		t.Errorf("second acquire = %v, want Aborted naming the running NodeStageVolume", err)
	}
	other, err := f.acquire("vol-2", "NodeStageVolume")
	if err != nil {
		t.Errorf("another volume is blocked: %v", err)
	} else {
		other()
	}
	release()
	release() // idempotent: must not free a later holder
	again, err := f.acquire("vol-1", "NodePublishVolume")
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	release()
	if _, err := f.acquire("vol-1", "x"); status.Code(err) != codes.Aborted {
		t.Errorf("a stale release freed the volume held by a later caller: %v", err)
	}
	again()
}

func TestInFlightConcurrent(t *testing.T) {
	f := newInFlight()
	const n = 32
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := f.acquire("vol", "op"); err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if won != 1 {
		t.Errorf("%d concurrent callers acquired the same volume, want exactly 1", won)
	}
}
