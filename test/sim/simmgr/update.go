package simmgr

import (
	"context"

	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Update applies mutate to obj and writes the object (or, with status, its status subresource)
// when mutate reports a change. On a conflict it re-reads obj from reader, uncached, and
// applies mutate again, so mutate must compute its change from the object it is given.
// Several simulated controllers (and virt-api) update the same objects; optimistic
// concurrency keeps each from overwriting the others' fields.
func Update[T client.Object](ctx context.Context, c client.Client, reader client.Reader, obj T, status bool, mutate func(T) bool) error {
	first := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := reader.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
				return err
			}
		}
		first = false
		if !mutate(obj) {
			return nil
		}
		if status {
			return c.Status().Update(ctx, obj)
		}
		return c.Update(ctx, obj)
	})
}
