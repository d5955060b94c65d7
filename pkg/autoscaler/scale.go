package autoscaler

import (
	"context"
	"errors"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// readScale reads md's /scale subresource from the API: the one read on the request path that
// bypasses the cache, because a size decision must start from the current value.
func (p *Provider) readScale(ctx context.Context, md *clusterv1.MachineDeployment) (*autoscalingv1.Scale, error) {
	return p.infra.Scale(ctx, md)
}

// updateScale sets md's replicas to decide(current), where current comes from a fresh read of
// /scale (fresh: the caller's own read if it just made one, else a new one), and writes it back
// with that read's resourceVersion, so a concurrent change makes the write fail with a conflict
// instead of being overwritten; it then starts over with a new read. decide's error aborts
// without writing.
func (p *Provider) updateScale(ctx context.Context, md *clusterv1.MachineDeployment, fresh *autoscalingv1.Scale,
	decide func(current int32) (int32, error)) (from, to int32, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale := fresh
		fresh = nil // a retry must read again
		if scale == nil {
			var rerr error
			if scale, rerr = p.readScale(ctx, md); rerr != nil {
				return rerr
			}
		}
		from = scale.Spec.Replicas
		next, derr := decide(from)
		if derr != nil {
			return derr
		}
		if to = next; to == from {
			return nil
		}
		scale.Spec.Replicas = to
		return p.infra.UpdateScale(ctx, md, scale)
	})
	if err != nil {
		return from, from, err
	}
	if to != from {
		klog.InfoS("Scaled MachineDeployment", "machineDeployment", klog.KObj(md), "from", from, "to", to)
		p.waitReplicas(ctx, md, to)
	}
	return from, to, nil
}

// waitReplicas waits, bounded by cacheWait, until the cache and the table show replicas: the
// proto asks scaling calls to return once the size is updated, and TargetSize answers from the
// table, which the informer's handler fills just after the cache.
func (p *Provider) waitReplicas(ctx context.Context, md *clusterv1.MachineDeployment, replicas int32) {
	err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, p.cacheWait, true, func(ctx context.Context) (bool, error) {
		cur := &clusterv1.MachineDeployment{}
		if err := p.view.infra.Get(ctx, client.ObjectKeyFromObject(md), cur, noCopy); err != nil {
			return false, nil
		}
		return targetSize(cur) == replicas && (p.table == nil || p.table.showsReplicas(md.Name, replicas)), nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		klog.V(2).InfoS("Cache did not show the new size in time", "machineDeployment", klog.KObj(md),
			"replicas", replicas, "err", err)
	}
}
