package autoscaler

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/klog/v2"
)

// NodeGroupGetOptions returns the group's autoscaling options: the client's defaults with the
// cluster.x-k8s.io/autoscaling-options-* annotations applied. With none set it answers
// Unimplemented, which the proto defines as "use the defaults".
func (p *Provider) NodeGroupGetOptions(ctx context.Context, req *protos.NodeGroupAutoscalingOptionsRequest) (*protos.NodeGroupAutoscalingOptionsResponse, error) {
	const op = "NodeGroupGetOptions"
	g, err := p.view.group(ctx, req.GetId())
	if err != nil {
		return nil, grpcError(op, err)
	}
	opts, set, problems := AutoscalingOptions(g.MD.Annotations, req.GetDefaults())
	if len(problems) > 0 {
		klog.V(2).InfoS("Ignoring autoscaling options that do not parse", "group", g.ID, "problems", errors.Join(problems...))
	}
	if !set {
		return nil, status.Errorf(codes.Unimplemented, "%s: group %s sets no %s* annotation", op, g.ID, AnnotationOptionsPrefix)
	}
	return &protos.NodeGroupAutoscalingOptionsResponse{NodeGroupAutoscalingOptions: opts}, nil
}
