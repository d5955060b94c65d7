package autoscaler

import (
	"context"
	"fmt"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NodeGroupDeleteNodes removes the named nodes' Machines: each is marked with Cluster API's
// delete-machine annotation (plus ours), then replicas go down by the number newly marked in
// one /scale write, so the MachineSet controller deletes exactly those.
//
//   - Every node must resolve to a Machine of this group, or nothing changes (InvalidArgument).
//     That covers cluster-autoscaler's fake nodes for Machines that never registered: their
//     name and providerID are the instance id NodeGroupNodes gave out.
//   - The result may not go below the group's min size (FailedPrecondition, nothing changes).
//   - Machines already deleting or already marked are skipped, so a retried call takes no
//     second replica off — except marks whose replica was never taken off (a crash between
//     the mark and the /scale write; see UncoveredMarks): the retry takes it off then.
//   - The /scale write only lands on the size the plan was made from. After a conflict the
//     whole plan is made again from live reads of the requested Machines, the group's Machines
//     and /scale: re-applying the old decrement to a size someone else just lowered is how two
//     replicas given the same call at once (a cluster-autoscaler failover) would take off two
//     replicas for one Machine.
//   - Calls for one group run one at a time in this process.
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

	var marked []*clusterv1.Machine // by any attempt of this call: what a failure rolls back
	var plan deletePlan
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var err error
		if plan, err = p.planDelete(ctx, g, resolved); err != nil || plan.take == 0 {
			return err
		}
		if err := p.markAll(ctx, plan.toMark); err != nil {
			return err
		}
		marked = append(marked, plan.toMark...)
		from := plan.scale.Spec.Replicas
		to, err := g.Bounds.DeleteTarget(from, plan.take)
		if err != nil {
			return err
		}
		plan.scale.Spec.Replicas = to
		if err := p.writer.SubResource("scale").Update(ctx, mdKey(g.MD), client.WithSubResourceBody(plan.scale)); err != nil {
			return err
		}
		klog.InfoS("Scaled MachineDeployment", "machineDeployment", klog.KObj(g.MD), "from", from, "to", to)
		return nil
	})
	if err != nil {
		p.unmarkAll(marked)
		return nil, grpcError(op, fmt.Errorf("group %s: %w", g.ID, err))
	}
	if plan.take == 0 {
		klog.V(2).InfoS("DeleteNodes: every Machine is already on its way out", "group", g.ID, "nodes", len(resolved))
		return &protos.NodeGroupDeleteNodesResponse{}, nil
	}
	p.waitReplicas(ctx, g.MD, plan.scale.Spec.Replicas)
	names := make([]string, len(marked))
	for i, m := range marked {
		names[i] = m.Name
	}
	klog.InfoS("Marked Machines for deletion", "group", g.ID, "machines", names, "owedByEarlierMarks", plan.owed)
	p.remember(ctx, marked)
	return &protos.NodeGroupDeleteNodesResponse{}, nil
}

// deletePlan is one attempt's decision: the Machines to mark, and the replicas to take off
// from scale (the fresh read the /scale write must land on).
type deletePlan struct {
	toMark []*clusterv1.Machine
	owed   int
	take   int
	scale  *autoscalingv1.Scale
}

// planDelete decides from live state: the requested Machines and the group's Machines as the
// API has them now (not the cache, which may not show another replica's marks yet), and /scale.
// It refuses, before anything is written, a plan that would go below the group's min size.
func (p *Provider) planDelete(ctx context.Context, g nodeGroup, resolved []ResolvedNode) (deletePlan, error) {
	fresh := make([]ResolvedNode, len(resolved))
	for i, r := range resolved {
		if r.Machine != nil {
			m, err := p.liveMachine(ctx, r.Machine)
			if err != nil {
				return deletePlan{}, err
			}
			r.Machine = m
		}
		fresh[i] = r
	}
	toMark, err := PlanDelete(g.ID, fresh, p.marked)
	if err != nil {
		return deletePlan{}, err
	}
	scale, err := p.readScale(ctx, g.MD)
	if err != nil {
		return deletePlan{}, err
	}
	owed, err := p.owedMarks(ctx, g, fresh, scale.Spec.Replicas)
	if err != nil {
		return deletePlan{}, err
	}
	plan := deletePlan{toMark: toMark, owed: owed, take: len(toMark) + owed, scale: scale}
	if plan.take > 0 {
		if _, err := g.Bounds.DeleteTarget(scale.Spec.Replicas, plan.take); err != nil {
			return deletePlan{}, err
		}
	}
	return plan, nil
}

// liveMachine re-reads m from the API. A Machine that is gone, or replaced by a namesake, is
// returned as deleting: its replica is someone else's business now.
func (p *Provider) liveMachine(ctx context.Context, m *clusterv1.Machine) (*clusterv1.Machine, error) {
	cur := &clusterv1.Machine{}
	err := p.live.Get(ctx, client.ObjectKeyFromObject(m), cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading Machine %s: %w", m.Name, err)
	}
	if err == nil && cur.UID == m.UID {
		return cur, nil
	}
	gone := m.DeepCopy()
	gone.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	return gone, nil
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
	machines, err := p.view.liveMachines(ctx, p.live, g.MD)
	if err != nil {
		return 0, err
	}
	return min(requested, UncoveredMarks(machines, replicas)), nil
}
