package autoscaler

import (
	"context"
	"errors"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/klog/v2"
)

// NodeGroupGetOptions returns the group's autoscaling options: the client's defaults with the
// cluster.x-k8s.io/autoscaling-options-* annotations applied, or the defaults as sent when it
// sets none, as cluster-autoscaler's clusterapi provider answers. Not Unimplemented: the
// externalgrpc client logs that and asks again for every group ≈100 times a loop.
func (p *Provider) NodeGroupGetOptions(ctx context.Context, req *protos.NodeGroupAutoscalingOptionsRequest) (*protos.NodeGroupAutoscalingOptionsResponse, error) {
	const op = "NodeGroupGetOptions"
	g, err := p.view.group(ctx, req.GetId())
	if err != nil {
		return nil, grpcError(op, err)
	}
	opts, _, problems := AutoscalingOptions(g.MD.Annotations, req.GetDefaults())
	if len(problems) > 0 {
		klog.V(2).InfoS("Ignoring autoscaling options that do not parse", "group", g.ID, "problems", errors.Join(problems...))
	}
	return &protos.NodeGroupAutoscalingOptionsResponse{NodeGroupAutoscalingOptions: opts}, nil
}
