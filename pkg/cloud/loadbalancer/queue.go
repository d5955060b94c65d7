package loadbalancer

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Retry bounds of the package's queues. The first retry comes fast because most failures are
// conflicts with a concurrent writer; the cap keeps a refused request from spinning.
const (
	retryBase    = 50 * time.Millisecond
	retryMax     = 2 * time.Minute
	refusalRetry = time.Minute
)

// queue is a rate-limited work queue of tenant Service keys with a sync function.
type queue struct {
	name string
	q    workqueue.TypedRateLimitingInterface[types.NamespacedName]
	sync func(context.Context, types.NamespacedName) error
}

func newQueue(name string, sync func(context.Context, types.NamespacedName) error) *queue {
	return &queue{
		name: name,
		q: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](retryBase, retryMax),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "tenantcloud-" + name}),
		sync: sync,
	}
}

func (q *queue) add(key types.NamespacedName) { q.q.Add(key) }

// run processes keys with workers goroutines until ctx ends, then shuts the queue down.
func (q *queue) run(ctx context.Context, workers int) {
	defer q.q.ShutDown()
	for range workers {
		go wait.UntilWithContext(ctx, q.work, time.Second)
	}
	<-ctx.Done()
}

func (q *queue) work(ctx context.Context) {
	for q.next(ctx) {
	}
}

func (q *queue) next(ctx context.Context) bool {
	key, quit := q.q.Get()
	if quit {
		return false
	}
	defer q.q.Done(key)
	if err := q.sync(ctx, key); err != nil {
		if _, refused := AsRefusal(err); refused {
			// Already reported as an Event; only a change of the Service (which enqueues it
			// again) or of the quota can fix it, so retry slowly rather than back off from 50ms.
			q.q.Forget(key)
			q.q.AddAfter(key, refusalRetry)
			return true
		}
		if expected(err) {
			klog.FromContext(ctx).V(2).Info("Sync will be retried", "queue", q.name, "service", key, "reason", err)
		} else {
			utilruntime.HandleErrorWithContext(ctx, err, "Sync failed, will retry", "queue", q.name, "service", key)
		}
		q.q.AddRateLimited(key)
		return true
	}
	q.q.Forget(key)
	return true
}

// expected are the errors of normal operation: a refusal (already reported as an Event), and
// a write that raced with another writer or with our own cache (conflict, already exists),
// which the quick first retry settles.
func expected(err error) bool {
	if _, refused := AsRefusal(err); refused {
		return true
	}
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}
