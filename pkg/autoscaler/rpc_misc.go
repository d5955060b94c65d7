package autoscaler

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// Refresh is called before every autoscaler loop. The caches are informers and always
// current, so there is nothing to reload; it only forgets deletion marks the cache now shows.
func (p *Provider) Refresh(ctx context.Context, _ *protos.RefreshRequest) (*protos.RefreshResponse, error) {
	p.marks.prune(ctx, p.view.infra)
	return &protos.RefreshResponse{}, nil
}

// Cleanup is called when the autoscaler shuts down; this server outlives it and keeps its
// caches for the next one.
func (p *Provider) Cleanup(context.Context, *protos.CleanupRequest) (*protos.CleanupResponse, error) {
	return &protos.CleanupResponse{}, nil
}

// GPULabel is not offered: GPU passthrough is not part of tenant node groups.
func (p *Provider) GPULabel(context.Context, *protos.GPULabelRequest) (*protos.GPULabelResponse, error) {
	return nil, status.Error(codes.Unimplemented, "GPULabel: tenant nodes carry no GPU label")
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
