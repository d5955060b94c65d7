package inflight

import (
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestAcquire(t *testing.T) {
	g := New()
	release, err := g.Acquire("tc-a", "CreateVolume")
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Acquire("tc-a", "DeleteVolume")
	if status.Code(err) != codes.Aborted {
		t.Fatalf("second call on the same ID: %v, want Aborted", err)
	}
	if want := `CreateVolume on "tc-a" is already in progress; retry DeleteVolume later`; status.Convert(err).Message() != want {
		t.Errorf("message %q, want %q", status.Convert(err).Message(), want)
	}
	other, err := g.Acquire("tc-b", "CreateVolume")
	if err != nil {
		t.Fatalf("another ID must not be blocked: %v", err)
	}
	other()
	release()
	again, err := g.Acquire("tc-a", "DeleteVolume")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	release() // idempotent: must not free the later holder
	if _, err := g.Acquire("tc-a", "x"); status.Code(err) != codes.Aborted {
		t.Errorf("a stale release freed the ID held by a later caller: %v", err)
	}
	again()
}

// Shared holders of one volume run side by side for different nodes; the same node, or any
// exclusive operation, is refused until the last of them released.
func TestAcquireShared(t *testing.T) {
	g := New()
	a, err := g.AcquireShared("tc-a", "vm-1", "ControllerPublishVolume")
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.AcquireShared("tc-a", "vm-2", "ControllerPublishVolume")
	if err != nil {
		t.Fatalf("a publish to another node must not be blocked: %v", err)
	}
	_, err = g.AcquireShared("tc-a", "vm-1", "ControllerUnpublishVolume")
	if want := `ControllerPublishVolume (node "vm-1") on "tc-a" is already in progress; retry ControllerUnpublishVolume later`; status.Code(err) != codes.Aborted || status.Convert(err).Message() != want {
		t.Errorf("same volume and node: %v, want Aborted %q", err, want)
	}
	_, err = g.Acquire("tc-a", "DeleteVolume")
	if want := `ControllerPublishVolume (node "vm-1") on "tc-a" is already in progress; retry DeleteVolume later`; status.Code(err) != codes.Aborted || status.Convert(err).Message() != want {
		t.Errorf("exclusive while shared: %v, want Aborted %q", err, want)
	}
	a()
	a() // idempotent
	if _, err := g.Acquire("tc-a", "DeleteVolume"); status.Code(err) != codes.Aborted {
		t.Errorf("exclusive while one shared holder is left: %v, want Aborted", err)
	}
	b()
	ex, err := g.Acquire("tc-a", "DeleteVolume")
	if err != nil {
		t.Fatalf("exclusive after every shared holder released: %v", err)
	}
	if _, err := g.AcquireShared("tc-a", "vm-3", "ControllerPublishVolume"); status.Code(err) != codes.Aborted {
		t.Errorf("shared while exclusive: %v, want Aborted", err)
	}
	ex()
	if len(g.held) != 0 {
		t.Errorf("entries left after every release: %v", g.held)
	}
}

func TestConcurrent(t *testing.T) {
	g := New()
	const n = 32
	var wg sync.WaitGroup
	var mu sync.Mutex
	exclusive, shared := 0, 0
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if _, err := g.Acquire("vol", "op"); err == nil {
				mu.Lock()
				exclusive++
				mu.Unlock()
			}
			// Every caller its own node: all of them get in (none released the ID yet).
			if _, err := g.AcquireShared("rwx", string(rune('a'+i)), "op"); err == nil {
				mu.Lock()
				shared++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if exclusive != 1 {
		t.Errorf("%d concurrent callers acquired the same volume, want exactly 1", exclusive)
	}
	if shared != n {
		t.Errorf("%d of %d concurrent callers on distinct nodes acquired the shared volume, want all", shared, n)
	}
}
