package autoscaler

import (
	"context"
	"fmt"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/klog/v2"
)

// NodeGroups lists this cluster's autoscaled MachineDeployments, leaving paused ones out as
// cluster-autoscaler's clusterapi provider does: listed, a paused group had every scale-down
// refused and retried each loop (≈90 refused calls and as many taint writes per group in
// 2.5 min).
func (p *Provider) NodeGroups(ctx context.Context, _ *protos.NodeGroupsRequest) (*protos.NodeGroupsResponse, error) {
	groups, err := p.view.groups(ctx)
	if err != nil {
		return nil, grpcError("NodeGroups", err)
	}
	resp := &protos.NodeGroupsResponse{NodeGroups: make([]*protos.NodeGroup, 0, len(groups))}
	for _, g := range groups {
		if !paused(g.MD) {
			resp.NodeGroups = append(resp.NodeGroups, g.proto())
		}
	}
	return resp, nil
}

// NodeGroupForNode maps a tenant Node to its group by providerID → Machine → MachineSet →
// MachineDeployment. Anything that is not a Machine of an autoscaled group of this cluster,
// including every foreign or made-up providerID, answers with an empty id ("not autoscaled"),
// which cluster-autoscaler does not cache, so a Node that joins a group later is picked up.
// A paused group's Nodes are not autoscaled either (see NodeGroups).
func (p *Provider) NodeGroupForNode(ctx context.Context, req *protos.NodeGroupForNodeRequest) (*protos.NodeGroupForNodeResponse, error) {
	g, ok, err := p.groupForNode(ctx, req.GetNode())
	if err != nil {
		return nil, grpcError("NodeGroupForNode", err)
	}
	if !ok || paused(g.MD) {
		return &protos.NodeGroupForNodeResponse{NodeGroup: &protos.NodeGroup{}}, nil
	}
	return &protos.NodeGroupForNodeResponse{NodeGroup: g.proto()}, nil
}

func (p *Provider) groupForNode(ctx context.Context, node *protos.ExternalGrpcNode) (nodeGroup, bool, error) {
	m, err := p.view.machineByInstance(ctx, instanceIDOf(node))
	if err != nil || m == nil {
		return nodeGroup{}, false, err
	}
	g, ok, err := p.view.groupOfMachine(ctx, m)
	if err != nil {
		return nodeGroup{}, false, fmt.Errorf("resolving node group of Machine %s: %w", m.Name, err)
	}
	if !ok {
		klog.V(5).InfoS("Machine is in no node group", "machine", klog.KObj(m))
	}
	return g, ok, nil
}

// instanceIDOf is the id a request node is known by: its providerID, or for a node without
// one its name (cluster-autoscaler's fake nodes carry the instance id in both).
func instanceIDOf(n *protos.ExternalGrpcNode) string {
	if id := n.GetProviderID(); id != "" {
		return id
	}
	return n.GetName()
}

func (g nodeGroup) proto() *protos.NodeGroup {
	return &protos.NodeGroup{
		Id:      g.ID,
		MinSize: g.Bounds.Min,
		MaxSize: g.Bounds.Max,
		Debug: fmt.Sprintf("MachineDeployment %s/%s (min %d, max %d, replicas %d)",
			g.MD.Namespace, g.MD.Name, g.Bounds.Min, g.Bounds.Max, targetSize(g.MD)),
	}
}
