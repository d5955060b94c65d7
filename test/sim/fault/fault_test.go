package fault

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFailNextCountsDown(t *testing.T) {
	i := New()
	i.FailNext("p", 2)
	ctx := context.Background()
	var fe *Error
	for n := range 2 {
		if err := i.Check(ctx, "p"); !errors.As(err, &fe) || fe.Point != "p" {
			t.Fatalf("pass %d: want injected failure, got %v", n, err)
		}
	}
	if err := i.Check(ctx, "p"); err != nil {
		t.Fatalf("third pass: %v", err)
	}
	if err := i.Check(ctx, "other"); err != nil {
		t.Fatalf("other point failed: %v", err)
	}
	if got := i.Hits("p"); got != 3 {
		t.Fatalf("hits = %d, want 3", got)
	}
}

func TestLatencyHonoursContext(t *testing.T) {
	i := New()
	i.SetLatency("p", time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := i.Check(ctx, "p"); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

func TestWaitBlocksUntilRelease(t *testing.T) {
	i := New()
	i.Stall("p")
	if !i.Stalled("p") {
		t.Fatal("not stalled")
	}
	done := make(chan error, 1)
	go func() { done <- i.Wait(context.Background(), "p") }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned while stalled: %v", err)
	default:
	}
	i.Release("p")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Release")
	}
}

func TestNilInjectorIsInert(t *testing.T) {
	var i *Injector
	if err := i.Wait(context.Background(), "p"); err != nil || i.Stalled("p") || i.Hits("p") != 0 {
		t.Fatal("nil injector injected something")
	}
}
