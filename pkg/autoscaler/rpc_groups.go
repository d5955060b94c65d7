package autoscaler

import (
	"context"
	"fmt"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// NodeGroups lists this cluster's autoscaled MachineDeployments, leaving paused ones out as
// cluster-autoscaler's clusterapi provider does: listed, a paused group had every scale-down
// refused and retried each loop (≈90 refused calls and as many taint writes per group in
// 2.5 min).
//
// The answer is the table's, shared by every call until a MachineDeployment changes: callers
// must not change it (the gRPC server only encodes it).
func (p *Provider) NodeGroups(context.Context, *protos.NodeGroupsRequest) (*protos.NodeGroupsResponse, error) {
	return p.table.nodeGroups(), nil
}

// NodeGroupForNode maps a tenant Node to its group by providerID → Machine → MachineSet →
// MachineDeployment. Anything that is not a Machine of an autoscaled group of this cluster,
// including every foreign or made-up providerID, answers with an empty id ("not autoscaled"),
// which cluster-autoscaler does not cache, so a Node that joins a group later is picked up.
// A paused group's Nodes are not autoscaled either (see NodeGroups).
// Its NodeGroup is the table's, shared like NodeGroups' answer.
func (p *Provider) NodeGroupForNode(_ context.Context, req *protos.NodeGroupForNodeRequest) (*protos.NodeGroupForNodeResponse, error) {
	if e := p.table.groupForNode(instanceIDOf(req.GetNode())); e != nil {
		return &protos.NodeGroupForNodeResponse{NodeGroup: e.msg}, nil
	}
	return &protos.NodeGroupForNodeResponse{NodeGroup: &protos.NodeGroup{}}, nil
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
