package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestNotifier(t *testing.T) {
	n := newNotifier()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var mu sync.Mutex
	state := 0
	get := func() int { mu.Lock(); defer mu.Unlock(); return state }
	set := func(v int) { mu.Lock(); state = v; mu.Unlock() }

	checks := make(chan int, 100)
	done := make(chan error, 1)
	go func() {
		done <- n.wait(ctx, kindDataVolume, "tc-x", func() (bool, error) {
			checks <- get()
			return get() >= 2, nil
		})
	}()
	<-checks // first check, before any event
	// An event for another object or kind does not wake the waiter.
	n.notify(kindDataVolume, "tc-other")
	n.notify(kindVMI, "tc-x")
	set(1)
	n.notify(kindDataVolume, "tc-x")
	if got := <-checks; got != 1 {
		t.Fatalf("re-check saw %d", got)
	}
	set(2)
	h := n.handler(kindDataVolume)
	h.OnUpdate(nil, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "tc-x"}})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(n.subs) != 0 {
		t.Errorf("subscriptions left: %v", n.subs)
	}

	// ctx ends the wait.
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if err := n.wait(short, kindVM, "vm", func() (bool, error) { return false, nil }); err != context.Canceled {
		t.Errorf("cancelled wait: %v", err)
	}
	var _ client.Object = &corev1.PersistentVolumeClaim{}
}
