package autoscaler

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/klog/v2"
)

// NodeGroupDeleteNodes removes the named nodes' Machines: each is marked with Cluster API's
// delete-machine annotation (plus ours), then replicas go down by the number newly marked in
// one conflict-checked /scale write, so the MachineSet controller deletes exactly those.
//
//   - Every node must resolve to a Machine of this group, or nothing changes (InvalidArgument).
//     That covers cluster-autoscaler's fake nodes for Machines that never registered: their
//     name and providerID are the instance id NodeGroupNodes gave out.
//   - The result may not go below the group's min size (FailedPrecondition, nothing changes).
//   - Machines already deleting or already marked are skipped, so a retried call takes no
//     second replica off — except marks whose replica was never taken off (a crash between
//     the mark and the /scale write; see UncoveredMarks): the retry takes it off then.
//   - Calls for one group run one at a time.
func (p *Provider) NodeGroupDeleteNodes(ctx context.Context, req *protos.NodeGroupDeleteNodesRequest) (*protos.NodeGroupDeleteNodesResponse, error) {
	const op = "NodeGroupDeleteNodes"
	g, unlock, err := p.lockGroup(ctx, req.GetId())
	if err != nil {
		return nil, grpcError(op, err)
	}
	defer unlock()

	resolved := make([]ResolvedNode, 0, len(req.GetNodes()))
	for _, n := range req.GetNodes() {
		id := instanceIDOf(n)
		r := ResolvedNode{Node: id}
		if r.Node == "" {
			r.Node = "<node without name or providerID>"
		}
		m, err := p.view.machineByInstance(ctx, id)
		if err != nil {
			return nil, grpcError(op, err)
		}
		if m != nil {
			mg, ok, err := p.view.groupOfMachine(ctx, m)
			if err != nil {
				return nil, grpcError(op, err)
			}
			r.Machine = m
			if ok {
				r.GroupID = mg.ID
			}
		}
		resolved = append(resolved, r)
	}
	toMark, err := PlanDelete(g.ID, resolved, p.marked)
	if err != nil {
		return nil, grpcError(op, err)
	}

	// Check the bounds on a fresh size before touching any Machine, so a refusal leaves
	// everything as it was; updateScale checks again against the value it writes over (this
	// read, unless a conflict makes it read again).
	scale, err := p.readScale(ctx, g.MD)
	if err != nil {
		return nil, grpcError(op, err)
	}
	owed, err := p.owedMarks(ctx, g, resolved, scale.Spec.Replicas)
	if err != nil {
		return nil, grpcError(op, err)
	}
	take := len(toMark) + owed
	if take == 0 {
		klog.V(2).InfoS("DeleteNodes: every Machine is already on its way out", "group", g.ID, "nodes", len(resolved))
		return &protos.NodeGroupDeleteNodesResponse{}, nil
	}
	if _, err := g.Bounds.DeleteTarget(scale.Spec.Replicas, take); err != nil {
		return nil, grpcError(op, fmt.Errorf("group %s: %w", g.ID, err))
	}
	if err := p.markAll(ctx, toMark); err != nil {
		return nil, grpcError(op, err)
	}
	if _, _, err := p.updateScale(ctx, g.MD, scale, func(cur int32) (int32, error) {
		return g.Bounds.DeleteTarget(cur, take)
	}); err != nil {
		p.unmarkAll(toMark)
		return nil, grpcError(op, fmt.Errorf("group %s: %w", g.ID, err))
	}
	names := make([]string, len(toMark))
	for i, m := range toMark {
		names[i] = m.Name
	}
	klog.InfoS("Marked Machines for deletion", "group", g.ID, "machines", names, "owedByEarlierMarks", owed)
	p.remember(ctx, toMark)
	return &protos.NodeGroupDeleteNodesResponse{}, nil
}

// owedMarks is how many replicas must still be taken off for requested Machines that an
// earlier call marked without taking their replica off (it died between the mark and the
// /scale write): without this, the retry would skip them as already handled and they would
// stay, marked, forever. Only requested Machines are counted, at most all uncovered marks.
func (p *Provider) owedMarks(ctx context.Context, g nodeGroup, resolved []ResolvedNode, replicas int32) (int, error) {
	requested := 0
	seen := map[types.UID]bool{}
	for _, r := range resolved {
		m := r.Machine
		if seen[m.UID] || !m.DeletionTimestamp.IsZero() || !MarkedByUs(m) || p.marks.has(m) {
			continue
		}
		seen[m.UID] = true
		requested++
	}
	if requested == 0 {
		return 0, nil
	}
	machines, err := p.view.machines(ctx, g.MD)
	if err != nil {
		return 0, err
	}
	return min(requested, UncoveredMarks(machines, replicas)), nil
}
