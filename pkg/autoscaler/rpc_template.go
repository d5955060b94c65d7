package autoscaler

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	"k8s.io/klog/v2"
)

// NodeGroupTemplateNodeInfo returns the Node a new member of the group would be, for
// scale-up simulations (scale from zero in particular). Capacity is merged from the VM spec,
// the KubevirtMachineTemplate's status.capacity and the capacity annotations, in that order of
// increasing precedence.
//
// When cpu or memory stays unknown the answer is Unimplemented, never an error: for
// cluster-autoscaler, Unimplemented means "build the template from an existing node of the
// group", while any other error aborts its whole template computation, for every group.
//
// This proto version carries the Node in the nodeInfo field only (the nodeBytes field of later
// versions does not exist here).
func (p *Provider) NodeGroupTemplateNodeInfo(ctx context.Context, req *protos.NodeGroupTemplateNodeInfoRequest) (*protos.NodeGroupTemplateNodeInfoResponse, error) {
	const op = "NodeGroupTemplateNodeInfo"
	g, err := p.view.group(ctx, req.GetId())
	if err != nil {
		return nil, grpcError(op, err)
	}
	node, err := p.templateNode(ctx, g)
	if errors.Is(err, ErrNoCapacity) {
		return nil, status.Errorf(codes.Unimplemented, "%s: group %s: %v; set the %s and %s annotations to scale it from zero",
			op, g.ID, err, AnnotationCapacityCPU, AnnotationCapacityMemory)
	}
	if err != nil {
		return nil, grpcError(op, fmt.Errorf("group %s: %w", g.ID, err))
	}
	return &protos.NodeGroupTemplateNodeInfoResponse{NodeInfo: node}, nil
}

func (p *Provider) templateNode(ctx context.Context, g nodeGroup) (*corev1.Node, error) {
	md := g.MD
	src, _, err := p.view.machineTemplate(ctx, md)
	if err != nil {
		return nil, err
	}
	problems := src.Problems
	fromAnnotations, err := CapacityFromAnnotations(md.Annotations)
	if err != nil {
		problems = append(problems, err)
	}
	node, templateProblems, err := TemplateNode(TemplateInput{
		Name:          md.Name,
		Annotations:   md.Annotations,
		MachineLabels: md.Spec.Template.Labels,
		MachineTaints: md.Spec.Template.Spec.Taints,
		FailureDomain: md.Spec.Template.Spec.FailureDomain,
		Architecture:  src.Architecture,
		Capacity:      MergeCapacity(src.VM, src.Status, fromAnnotations),
	})
	problems = append(problems, templateProblems...)
	if len(problems) > 0 {
		// Verbose only: cluster-autoscaler caches the template, but asks again after restarts.
		klog.V(2).InfoS("Parts of the template node could not be read and were left out",
			"group", g.ID, "problems", errors.Join(problems...))
	}
	return node, err
}
