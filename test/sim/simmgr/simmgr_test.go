package simmgr

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// TestManagerStopsWhileRequeueing stops simulator managers while their controllers are busy the
// way the simulators are when a test tears down a world: several workers reconciling, items
// failing and requeueing, new events arriving. Each manager must stop within its grace period.
// With controller-runtime v0.24.1's priority queue the stop could deadlock
// (kubernetes-sigs/controller-runtime#3538: a worker still reconciling blocks for good in the
// queue's Done), which BenchmarkScaleUp100 hit as "failed waiting for all runnables to end
// within grace period of 10s"; New uses the classic workqueue.
func TestManagerStopsWhileRequeueing(t *testing.T) {
	const rounds, workers, objects = 30, 8, 64
	for round := range rounds {
		// Nothing here talks to an apiserver: the controller's only source is a channel, and
		// the manager's cache has no informer to start.
		mgr, err := New(&rest.Config{Host: "https://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		if opts := mgr.GetControllerOptions(); opts.UsePriorityQueue == nil || *opts.UsePriorityQueue {
			t.Fatalf("simulator managers must not use the priority queue (controller-runtime#3538)")
		}
		var reconciles atomic.Int64
		events := make(chan event.GenericEvent)
		c, err := controller.New(fmt.Sprintf("requeue-%d", round), mgr, controller.Options{
			MaxConcurrentReconciles: workers,
			Reconciler: reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
				reconciles.Add(1)
				// A failing reconcile, as the simulators' are once their apiserver calls are
				// cancelled: the item goes back rate-limited and is soon ready again.
				return reconcile.Result{}, fmt.Errorf("reconciling %s: always failing", req.Name)
			}),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Watch(source.Channel(events, &handler.EnqueueRequestForObject{})); err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Start(ctx) }()
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			for i := 0; ; i++ {
				obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("cm-%d", i%objects)}}
				select {
				case events <- event.GenericEvent{Object: client.Object(obj)}:
				case <-ctx.Done():
					return
				}
			}
		}()
		for reconciles.Load() < 3*objects {
			select {
			case err := <-done:
				t.Fatalf("round %d: manager stopped by itself: %v", round, err)
			case <-time.After(time.Millisecond):
			}
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("round %d: manager did not stop cleanly after %d reconciles: %v\n%s", round, reconciles.Load(), err, StuckGoroutines())
		}
		<-fed
	}
}
