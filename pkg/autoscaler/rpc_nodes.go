package autoscaler

import (
	"context"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// NodeGroupNodes lists the group's Machines as instances; see InstanceID and InstanceFor for
// the ids and states.
func (p *Provider) NodeGroupNodes(ctx context.Context, req *protos.NodeGroupNodesRequest) (*protos.NodeGroupNodesResponse, error) {
	g, err := p.view.group(ctx, req.GetId())
	if err != nil {
		return nil, grpcError("NodeGroupNodes", err)
	}
	machines, err := p.view.machines(ctx, g.MD)
	if err != nil {
		return nil, grpcError("NodeGroupNodes", err)
	}
	resp := &protos.NodeGroupNodesResponse{Instances: make([]*protos.Instance, 0, len(machines))}
	for _, m := range machines {
		resp.Instances = append(resp.Instances, InstanceFor(m, p.view.registered(ctx, m)))
	}
	return resp, nil
}
