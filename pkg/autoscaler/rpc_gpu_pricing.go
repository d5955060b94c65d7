package autoscaler

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// GPULabel answers with no label: GPU passthrough is not part of tenant node groups. An empty
// answer, not Unimplemented: cluster-autoscaler's externalgrpc client caches only a successful
// answer and otherwise asks again (and logs the error) every time, ≈100 times a loop at 20
// nodes.
func (p *Provider) GPULabel(context.Context, *protos.GPULabelRequest) (*protos.GPULabelResponse, error) {
	return &protos.GPULabelResponse{}, nil
}

// GetAvailableGPUTypes is not offered; see GPULabel.
func (p *Provider) GetAvailableGPUTypes(context.Context, *protos.GetAvailableGPUTypesRequest) (*protos.GetAvailableGPUTypesResponse, error) {
	return nil, status.Error(codes.Unimplemented, "GetAvailableGPUTypes: no GPU types are offered; use the gpu-type and gpu-count capacity annotations")
}

// PricingNodePrice is optional in the proto; no prices are known for tenant VMs.
func (p *Provider) PricingNodePrice(context.Context, *protos.PricingNodePriceRequest) (*protos.PricingNodePriceResponse, error) {
	return nil, status.Error(codes.Unimplemented, "PricingNodePrice: pricing is not supported")
}

// PricingPodPrice is optional in the proto; see PricingNodePrice.
func (p *Provider) PricingPodPrice(context.Context, *protos.PricingPodPriceRequest) (*protos.PricingPodPriceResponse, error) {
	return nil, status.Error(codes.Unimplemented, "PricingPodPrice: pricing is not supported")
}
