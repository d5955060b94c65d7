package autoscaler

import (
	"context"
	"time"

	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// maxCall bounds a scaling call's work whatever deadline the client sent, so that a mark
	// older than orphanAfter can belong to no call still running.
	maxCall = 30 * time.Second
	// orphanAfter is when a mark without its replica is taken for orphaned: maxCall plus the
	// rollback's own bound (unmarkAll), with room for clock skew between replicas.
	orphanAfter = 2 * time.Minute
)

// sweepOrphans takes off, once per autoscaler loop (Refresh), the replicas owed for orphaned
// deletion marks (see OrphanedMarks). It costs one index lookup when no mark is old.
func (p *Provider) sweepOrphans(ctx context.Context) {
	var list clusterv1.MachineList
	if err := p.view.infra.List(ctx, &list, client.InNamespace(p.scope.Namespace),
		client.MatchingFields{indexMarked: "true"}, noCopy); err != nil {
		klog.V(2).InfoS("Cannot look for orphaned deletion marks", "err", err)
		return
	}
	now := p.clock()
	groups := map[string]bool{}
	for i := range list.Items {
		m := &list.Items[i]
		if at, ok := MarkTime(m); ok && now.Sub(at) < orphanAfter {
			continue
		}
		// A paused group is not scaled, and would refuse this every loop.
		if g, ok, err := p.view.groupOfMachine(ctx, m); err == nil && ok && !paused(g.MD) {
			groups[g.ID] = true
		}
	}
	for id := range groups {
		if err := p.sweepGroup(ctx, id, now); err != nil {
			// The next loop tries again.
			klog.InfoS("Taking off the replicas of orphaned deletion marks failed", "group", id, "err", err)
		}
	}
}

func (p *Provider) sweepGroup(ctx context.Context, id string, now time.Time) error {
	g, unlock, err := p.lockGroup(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	var from, to int32
	err = retry.RetryOnConflict(deleteRetry, func() error {
		// Decided again from fresh state after a conflict, like NodeGroupDeleteNodes.
		machines, err := p.view.liveMachines(ctx, p.infra, g.MD)
		if err != nil {
			return err
		}
		scale, err := p.readScale(ctx, g.MD)
		if err != nil {
			return err
		}
		from, to = scale.Spec.Replicas, scale.Spec.Replicas
		owed := OrphanedMarks(machines, from, now, orphanAfter)
		if owed == 0 {
			return nil
		}
		if to, err = g.Bounds.DeleteTarget(from, owed); err != nil {
			return err
		}
		scale.Spec.Replicas = to
		return p.infra.UpdateScale(ctx, g.MD, scale)
	})
	if err != nil || to == from {
		return err
	}
	klog.InfoS("Took off the replicas of orphaned deletion marks", "group", id, "from", from, "to", to)
	p.waitReplicas(ctx, g.MD, to)
	return nil
}

// clock is the provider's time; tests move it on.
func (p *Provider) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}
