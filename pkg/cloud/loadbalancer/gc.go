package loadbalancer

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// collectOrphans deletes, once at start-up, the infra Services whose tenant Service is gone
// (deleted while the CCM was down, its finalizer removed by hand) and infra EndpointSlices
// whose infra Service is gone. A tenant Service is only taken as gone after a live GET
// confirms what the informer says, and only objects this tenant owns are deleted. A tenant
// Service that still exists but no longer wants a load balancer is left to the service
// controller, which sees it through its finalizer.
func (b *Balancer) collectOrphans(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	t := b.tenantView()
	var svcs corev1.ServiceList
	if err := b.infra.ListOwned(ctx, &svcs, Component, nil); err != nil {
		return err
	}
	live := map[string]bool{}
	for i := range svcs.Items {
		infraSvc := &svcs.Items[i]
		gone, err := b.tenantGone(ctx, t, infraSvc)
		if err != nil {
			return err
		}
		if !gone {
			live[infraSvc.Name] = true
			continue
		}
		if err := b.deleteSlices(ctx, map[string]string{LabelServiceUID: infraSvc.Labels[LabelServiceUID]}); err != nil {
			return err
		}
		if err := b.infra.DeleteOwned(ctx, infraSvc); err != nil {
			return err
		}
		logger.Info("Deleted orphaned infra Service", "infraService", klog.KObj(infraSvc),
			"tenantService", infraSvc.Labels[LabelServiceNamespace]+"/"+infraSvc.Labels[LabelServiceName])
	}
	var slices discoveryv1.EndpointSliceList
	if err := b.infra.ListOwned(ctx, &slices, Component, nil); err != nil {
		return err
	}
	for i := range slices.Items {
		sl := &slices.Items[i]
		if live[sl.Labels[discoveryv1.LabelServiceName]] {
			continue
		}
		if err := b.infra.DeleteOwned(ctx, sl); err != nil {
			return err
		}
		logger.Info("Deleted orphaned infra EndpointSlice", "slice", klog.KObj(sl))
	}
	return nil
}

// tenantGone reports whether the tenant Service infraSvc stands for no longer exists (same
// namespace, name and UID).
func (b *Balancer) tenantGone(ctx context.Context, t *tenantView, infraSvc *corev1.Service) (bool, error) {
	ns, name, uid := infraSvc.Labels[LabelServiceNamespace], infraSvc.Labels[LabelServiceName], types.UID(infraSvc.Labels[LabelServiceUID])
	if ns == "" || name == "" || uid == "" {
		return false, nil // not something this package wrote; leave it to a human
	}
	if svc, err := t.services.Services(ns).Get(name); err == nil && svc.UID == uid {
		return false, nil
	}
	svc, err := t.client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("checking tenant Service %s/%s: %w", ns, name, err)
	}
	return svc.UID != uid, nil
}
