package autoscaler

import (
	"context"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// NodeGroupNodes lists the group's Machines as instances; see InstanceID and InstanceFor for
// the ids and states. It answers from the table (see table.go).
func (p *Provider) NodeGroupNodes(_ context.Context, req *protos.NodeGroupNodesRequest) (*protos.NodeGroupNodesResponse, error) {
	e, err := p.table.group(req.GetId())
	if err != nil {
		return nil, grpcError("NodeGroupNodes", err)
	}
	return &protos.NodeGroupNodesResponse{Instances: p.table.instances(e)}, nil
}
