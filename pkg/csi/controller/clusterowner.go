package controller

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// DataVolumes and VolumeSnapshots carry an owner reference to the tenant's Cluster API Cluster
// (infra.ClusterOwnerReference), so the management cluster's garbage collector removes them
// when the tenant is deleted; storage.retainDataVolumes leaves DataVolumes without it.

// addClusterOwner gives obj, about to be created, its owner reference to the tenant's Cluster.
// A tenant whose Cluster is being deleted or gone gets FailedPrecondition: nothing more is
// created for it.
func (s *Server) addClusterOwner(ctx context.Context, obj client.Object, format string, args ...any) error {
	_, err := s.infra.AddClusterOwner(ctx, obj)
	if errors.Is(err, infra.ErrTenantDeleted) {
		return status.Errorf(codes.FailedPrecondition, "%s: %v", fmt.Sprintf(format, args...), err)
	}
	if err != nil {
		return apiError(err, format, args...)
	}
	return nil
}

// ensureClusterOwner gives a DataVolume created before volumes were owned by the tenant's
// Cluster (or while no Cluster existed) its owner reference. ControllerPublishVolume calls it,
// as Start's sweep (ownDataVolumes) does for every volume when csi-controller starts, e.g.
// after the upgrade that brought owner references.
//
// A failure is logged, not returned: attaching the tenant's disk matters more than the cleanup
// after a deletion that has not happened, and the next publish or start tries again.
func (s *Server) ensureClusterOwner(ctx context.Context, dv *cdiv1.DataVolume) {
	if s.opts.Storage.RetainDataVolumes || infra.HasClusterOwner(dv, s.scope.ClusterName) {
		return
	}
	ref, err := s.infra.ClusterOwnerReference(ctx)
	if err == nil && ref != nil {
		err = s.patchClusterOwner(ctx, dv, ref)
	}
	if err != nil {
		klog.FromContext(ctx).Error(err, "DataVolume stays without an owner reference to the tenant's Cluster until it is next published",
			"dataVolume", klog.KObj(dv))
	}
}

// ownDataVolumes is Start's sweep: every volume of this tenant without the owner reference
// gets it, with one lookup of the Cluster for all of them.
func (s *Server) ownDataVolumes(ctx context.Context) {
	if s.opts.Storage.RetainDataVolumes {
		return
	}
	logger := klog.FromContext(ctx)
	vols, err := s.listVolumes(ctx)
	if err != nil {
		logger.Error(err, "Listing DataVolumes for their owner reference to the tenant's Cluster")
		return
	}
	var ref *metav1.OwnerReference
	for _, v := range vols {
		if infra.HasClusterOwner(v.dv, s.scope.ClusterName) {
			continue
		}
		if ref == nil {
			if ref, err = s.infra.ClusterOwnerReference(ctx); err != nil || ref == nil {
				if err != nil {
					logger.Error(err, "DataVolumes stay without an owner reference to the tenant's Cluster")
				}
				return
			}
		}
		if err := s.patchClusterOwner(ctx, v.dv, ref); err != nil {
			logger.Error(err, "DataVolume stays without an owner reference to the tenant's Cluster until it is next published",
				"dataVolume", klog.KObj(v.dv))
		}
	}
}

func (s *Server) patchClusterOwner(ctx context.Context, dv *cdiv1.DataVolume, ref *metav1.OwnerReference) error {
	patched := dv.DeepCopy()
	patched.OwnerReferences = append(patched.OwnerReferences, *ref)
	// The optimistic lock keeps a concurrent writer's owner references: a merge patch
	// replaces the whole list.
	if err := s.infra.PatchOwned(ctx, patched, client.MergeFromWithOptions(dv, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("DataVolume %s/%s: adding the owner reference to Cluster %s: %w", dv.Namespace, dv.Name, ref.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("DataVolume now owned by the tenant's Cluster", "dataVolume", klog.KObj(dv))
	return nil
}
