package autoscaler

import (
	"context"
	"fmt"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
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
//     the mark and the /scale write, or this call's own marks after a lost /scale write; see
//     OwedCandidates and UncoveredMarks): those are taken off then.
//   - The /scale write only lands on the size the plan was made from. After a conflict that
//     left replicas as they were (only the resourceVersion moved), the same size is written
//     again. If replicas changed, the whole plan is made again from live reads of the
//     requested Machines, the group's Machines and /scale: re-applying the old decrement to a
//     size someone else just lowered is how two replicas given the same call at once (a
//     cluster-autoscaler failover) would take off two replicas for one Machine.
//   - Calls for one group run one at a time in this process.
func (p *Provider) NodeGroupDeleteNodes(ctx context.Context, req *protos.NodeGroupDeleteNodesRequest) (*protos.NodeGroupDeleteNodesResponse, error) {
	const op = "NodeGroupDeleteNodes"
	ctx, cancel := context.WithTimeout(ctx, maxCall)
	defer cancel()
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

	var (
		marked []*clusterv1.Machine // by any attempt of this call: what a failure rolls back
		ours   = map[types.UID]bool{}
		plan   deletePlan
		// lost is set once plan's marks are in place and its /scale write was sent.
		lost bool
	)
	err = retry.RetryOnConflict(deleteRetry, func() error {
		if lost {
			// The last attempt's /scale write lost a race. Usually only the resourceVersion
			// moved (the MachineDeployment controller writes status all through a
			// scale-down): replicas are still what the plan was made from, so nobody took a
			// replica off since and the plan, marks included, still holds.
			scale, err := p.readScale(ctx, g.MD)
			if err != nil {
				return err
			}
			if scale.Spec.Replicas == plan.from {
				plan.scale = scale
				return p.writeDelete(ctx, g, plan)
			}
			// Someone else changed the size: decide again from live state.
		}
		lost = false
		var err error
		if plan, err = p.planDelete(ctx, g, resolved, func(m *clusterv1.Machine) bool { return ours[m.UID] }); err != nil || plan.take == 0 {
			return err
		}
		if err := p.markAll(ctx, plan.toMark); err != nil {
			return err
		}
		marked = append(marked, plan.toMark...)
		for _, m := range plan.toMark {
			ours[m.UID] = true
		}
		lost = true
		return p.writeDelete(ctx, g, plan)
	})
	if err != nil {
		// If the MachineSet controller already deleted one of these in an earlier call's
		// place, that call's Machine stays marked with no replica for it; Refresh takes that
		// replica off once the mark is orphaned (sweepOrphans).
		p.unmarkAll(marked)
		return nil, grpcError(op, fmt.Errorf("group %s: %w", g.ID, err))
	}
	if plan.take == 0 {
		klog.V(2).InfoS("DeleteNodes: every Machine is already on its way out", "group", g.ID, "nodes", len(resolved))
		return &protos.NodeGroupDeleteNodesResponse{}, nil
	}
	p.waitReplicas(ctx, g.MD, plan.to)
	names := make([]string, len(marked))
	for i, m := range marked {
		names[i] = m.Name
	}
	klog.InfoS("Marked Machines for deletion", "group", g.ID, "machines", names, "owedByEarlierMarks", plan.owed)
	p.remember(ctx, marked)
	return &protos.NodeGroupDeleteNodesResponse{}, nil
}

// deleteRetry bounds the /scale conflicts one DeleteNodes call rides out: ≈4 s in all, near
// than cluster-autoscaler's default gRPC timeout (5 s), whose context ends it first. A conflict
// is always transient: during a bulk scale-down every status write of the MachineDeployment
// controller (one or more per Machine that goes) moves the resourceVersion; 20 parallel calls
// saw 14 conflicts in one run. Giving up is what costs: the call's marks are rolled back, but
// one the MachineSet controller already deleted in an earlier call's place cannot be.
// (No Cap: reaching it ends a wait.Backoff.)
var deleteRetry = wait.Backoff{Steps: 30, Duration: 10 * time.Millisecond, Factor: 1.15, Jitter: 0.5}

// deletePlan is one attempt's decision: the Machines to mark, and the replicas to take off
// from scale (the fresh read the /scale write must land on): from → to.
type deletePlan struct {
	toMark   []*clusterv1.Machine
	owed     int
	take     int
	from, to int32
	scale    *autoscalingv1.Scale
}

// writeDelete writes plan's size with the resourceVersion of plan.scale.
func (p *Provider) writeDelete(ctx context.Context, g nodeGroup, plan deletePlan) error {
	scale := plan.scale.DeepCopy()
	scale.Spec.Replicas = plan.to
	if err := p.infra.UpdateScale(ctx, g.MD, scale); err != nil {
		return err
	}
	klog.InfoS("Scaled MachineDeployment", "machineDeployment", klog.KObj(g.MD), "from", plan.from, "to", plan.to)
	return nil
}

// planDelete decides from live state: the requested Machines and the group's Machines as the
// API has them now (not the cache, which may not show another replica's marks yet), and /scale.
// It refuses, before anything is written, a plan that would go below the group's min size.
// ours reports the Machines an earlier attempt of the same call marked (see OwedCandidates).
func (p *Provider) planDelete(ctx context.Context, g nodeGroup, resolved []ResolvedNode, ours func(*clusterv1.Machine) bool) (deletePlan, error) {
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
	owed, err := p.owedMarks(ctx, g, fresh, scale.Spec.Replicas, ours)
	if err != nil {
		return deletePlan{}, err
	}
	plan := deletePlan{toMark: toMark, owed: owed, take: len(toMark) + owed, scale: scale,
		from: scale.Spec.Replicas, to: scale.Spec.Replicas}
	if plan.take > 0 {
		if plan.to, err = g.Bounds.DeleteTarget(scale.Spec.Replicas, plan.take); err != nil {
			return deletePlan{}, err
		}
	}
	return plan, nil
}

// liveMachine re-reads m from the API. A Machine that is gone, or replaced by a namesake, is
// returned as deleting: its replica is someone else's business now.
func (p *Provider) liveMachine(ctx context.Context, m *clusterv1.Machine) (*clusterv1.Machine, error) {
	cur := &clusterv1.Machine{}
	err := p.infra.GetInClusterLive(ctx, m.Name, cur)
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

// owedMarks is how many replicas must still be taken off for requested Machines that carry
// our mark with no replica taken off for them (see OwedCandidates): without this, such a
// Machine would be skipped as already handled and stay, marked, forever. The count is capped
// by the marks the group's live state shows uncovered: another replica given the same request
// at the same time may have marked the same Machine and taken its replica off already.
func (p *Provider) owedMarks(ctx context.Context, g nodeGroup, resolved []ResolvedNode, replicas int32, ours func(*clusterv1.Machine) bool) (int, error) {
	requested := make([]*clusterv1.Machine, len(resolved))
	for i, r := range resolved {
		requested[i] = r.Machine
	}
	candidates := OwedCandidates(requested, ours, p.marks.has)
	if candidates == 0 {
		return 0, nil
	}
	machines, err := p.view.liveMachines(ctx, p.infra, g.MD)
	if err != nil {
		return 0, err
	}
	return min(candidates, UncoveredMarks(machines, replicas)), nil
}
