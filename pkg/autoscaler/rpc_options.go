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
//
// It is a per-loop call like the ones the table answers: cluster-autoscaler does not cache
// it and asks once per unregistered instance every loop (its MaxNodeProvisionTime check), so
// in a 0 → 100 scale-up it is as frequent as NodeGroupForNode. The group comes from the table.
func (p *Provider) NodeGroupGetOptions(_ context.Context, req *protos.NodeGroupAutoscalingOptionsRequest) (*protos.NodeGroupAutoscalingOptionsResponse, error) {
	const op = "NodeGroupGetOptions"
	e, err := p.table.group(req.GetId())
	if err != nil {
		return nil, grpcError(op, err)
	}
	opts, _, problems := AutoscalingOptions(e.md.Annotations, req.GetDefaults())
	if len(problems) > 0 {
		klog.V(2).InfoS("Ignoring autoscaling options that do not parse", "group", e.g.ID, "problems", errors.Join(problems...))
	}
	return &protos.NodeGroupAutoscalingOptionsResponse{NodeGroupAutoscalingOptions: opts}, nil
}
