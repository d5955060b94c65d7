package autoscaler

import (
	"context"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
)

// Refresh is called before every autoscaler loop. The caches are informers and always
// current, so there is nothing to reload; it forgets deletion marks the cache now shows and
// takes off the replicas of orphaned ones (see sweepOrphans).
func (p *Provider) Refresh(ctx context.Context, _ *protos.RefreshRequest) (*protos.RefreshResponse, error) {
	p.marks.prune(ctx, p.view.infra)
	p.sweepOrphans(ctx)
	return &protos.RefreshResponse{}, nil
}

// Cleanup is called when the autoscaler shuts down; this server outlives it and keeps its
// caches for the next one.
func (p *Provider) Cleanup(context.Context, *protos.CleanupRequest) (*protos.CleanupResponse, error) {
	return &protos.CleanupResponse{}, nil
}
