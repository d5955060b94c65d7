package capi

import (
	"context"

	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// update applies mutate to obj and writes the object (or, with status, its status subresource)
// when mutate reports a change. On a conflict it re-reads obj from reader, uncached, and
// applies mutate again, so mutate must compute its change from the object it is given.
// Other writers (virt-api, the hotplug simulator) update the same objects; optimistic
// concurrency keeps us from overwriting their fields.
func update[T client.Object](ctx context.Context, c client.Client, reader client.Reader, obj T, status bool, mutate func(T) bool) error {
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
