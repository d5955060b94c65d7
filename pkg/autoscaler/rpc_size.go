package autoscaler

import (
	"context"
	"fmt"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// NodeGroupTargetSize answers from the table (see table.go): cluster-autoscaler asks for every
// group on every loop and does not cache the answer, so this must be cheap. Scaling calls wait
// until the cache and the table show their own writes, so a loop never reads back a size older
// than its last change.
func (p *Provider) NodeGroupTargetSize(_ context.Context, req *protos.NodeGroupTargetSizeRequest) (*protos.NodeGroupTargetSizeResponse, error) {
	e, err := p.table.group(req.GetId())
	if err != nil {
		return nil, grpcError("NodeGroupTargetSize", err)
	}
	return &protos.NodeGroupTargetSizeResponse{TargetSize: targetSize(e.md)}, nil
}

// NodeGroupIncreaseSize raises replicas by delta, up to the group's max.
func (p *Provider) NodeGroupIncreaseSize(ctx context.Context, req *protos.NodeGroupIncreaseSizeRequest) (*protos.NodeGroupIncreaseSizeResponse, error) {
	const op = "NodeGroupIncreaseSize"
	g, unlock, err := p.lockGroup(ctx, req.GetId())
	if err != nil {
		return nil, grpcError(op, err)
	}
	defer unlock()
	if _, _, err := p.updateScale(ctx, g.MD, nil, func(cur int32) (int32, error) {
		return g.Bounds.IncreaseTarget(cur, req.GetDelta())
	}); err != nil {
		return nil, grpcError(op, fmt.Errorf("group %s: %w", g.ID, err))
	}
	return &protos.NodeGroupIncreaseSizeResponse{}, nil
}

// NodeGroupDecreaseTargetSize lowers replicas by -delta, dropping only requests that are not
// fulfilled yet: never below the number of registered Machines. If that leaves fewer replicas
// than Machines, the surplus Machines without a Node are marked first, so that the MachineSet
// controller removes those and not a registered one it might otherwise pick.
func (p *Provider) NodeGroupDecreaseTargetSize(ctx context.Context, req *protos.NodeGroupDecreaseTargetSizeRequest) (*protos.NodeGroupDecreaseTargetSizeResponse, error) {
	const op = "NodeGroupDecreaseTargetSize"
	ctx, cancel := context.WithTimeout(ctx, maxCall)
	defer cancel()
	g, unlock, err := p.lockGroup(ctx, req.GetId())
	if err != nil {
		return nil, grpcError(op, err)
	}
	defer unlock()
	if err := p.decrease(ctx, g, req.GetDelta()); err != nil {
		return nil, grpcError(op, fmt.Errorf("group %s: %w", g.ID, err))
	}
	return &protos.NodeGroupDecreaseTargetSizeResponse{}, nil
}

func (p *Provider) decrease(ctx context.Context, g nodeGroup, delta int32) error {
	machines, err := p.view.machines(ctx, g.MD)
	if err != nil {
		return err
	}
	registered := func(m *clusterv1.Machine) bool { return p.view.registered(ctx, m) }
	live, registeredCount := 0, 0
	for _, m := range machines {
		if m.DeletionTimestamp.IsZero() && !p.marked(m) {
			live++
			if registered(m) {
				registeredCount++
			}
		}
	}
	scale, err := p.readScale(ctx, g.MD)
	if err != nil {
		return err
	}
	before := scale.Spec.Replicas
	next, err := g.Bounds.DecreaseTarget(before, delta, registeredCount)
	if err != nil {
		return err
	}
	victims := PickUnregistered(machines, live-int(next), registered, p.marked)
	if err := p.markAll(ctx, victims); err != nil {
		return err
	}
	_, _, err = p.updateScale(ctx, g.MD, scale, func(cur int32) (int32, error) {
		if cur != before {
			// The marks were chosen for the old size; let the caller retry with fresh state.
			return 0, fmt.Errorf("%w: was %d, now %d", errChanged, before, cur)
		}
		return next, nil
	})
	if err != nil {
		p.unmarkAll(victims)
		return err
	}
	p.remember(ctx, victims)
	return nil
}

// lockGroup resolves id, takes the group's lock and resolves it again under the lock, so the
// caller works on the state left by the previous holder. Paused groups are refused.
func (p *Provider) lockGroup(ctx context.Context, id string) (nodeGroup, func(), error) {
	if _, err := p.view.group(ctx, id); err != nil {
		return nodeGroup{}, nil, err
	}
	unlock := p.locks.lock(id)
	g, err := p.view.group(ctx, id)
	if err == nil && paused(g.MD) {
		err = fmt.Errorf("group %s: %w; unpause it to scale", id, errPaused)
	}
	if err != nil {
		unlock()
		return nodeGroup{}, nil, err
	}
	return g, unlock, nil
}

// remember records freshly marked Machines and waits for the cache to show the marks.
func (p *Provider) remember(ctx context.Context, machines []*clusterv1.Machine) {
	if len(machines) == 0 {
		return
	}
	for _, m := range machines {
		p.marks.add(m)
	}
	p.waitMarked(ctx, machines)
}
