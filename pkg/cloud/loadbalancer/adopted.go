package loadbalancer

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Load balancers adopted from kubevirt/cloud-provider-kubevirt (pkg/adopt, docs/migration.md)
// keep their infra Service, so they keep the address MetalLB gave it. The upstream CCM names
// that Service cloudprovider.DefaultLoadBalancerName(tenant Service): "a" and the tenant
// Service's UID without dashes, cut to 32 characters (pkg/provider/loadbalancer.go
// GetLoadBalancerName). After adoption it is managed exactly like a native one, under its
// old name, and only while it carries the adoption marks for this tenant with its own UID and
// the tenant Service's UID label (the same checks as infraService's).

// UpstreamServiceName is the infra Service name the upstream CCM gives tenant Service uid.
func UpstreamServiceName(uid types.UID) string {
	return cloudprovider.DefaultLoadBalancerName(&corev1.Service{ObjectMeta: metav1.ObjectMeta{UID: uid}})
}

// adoptedService returns the adopted upstream infra Service standing for this incarnation of
// svc; NotFound if there is none.
func (b *Balancer) adoptedService(ctx context.Context, svc *corev1.Service) (*corev1.Service, error) {
	if svc.UID == "" {
		return nil, apierrors.NewNotFound(corev1.Resource("services"), svc.Name)
	}
	name := UpstreamServiceName(svc.UID)
	infraSvc := &corev1.Service{}
	if err := b.infra.GetOwned(ctx, name, infraSvc); err != nil {
		return nil, err
	}
	if !b.infra.Scope().Adopted(infraSvc, infra.AdoptedFromCCM) || infraSvc.Labels[LabelServiceUID] != string(svc.UID) {
		return nil, apierrors.NewNotFound(corev1.Resource("services"), name)
	}
	return infraSvc, nil
}
