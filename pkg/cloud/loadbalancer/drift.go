package loadbalancer

import (
	"context"
	"maps"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	servicehelper "k8s.io/cloud-provider/service/helpers"
)

// driftSync re-applies DesiredService when something the upstream service controller does
// not watch for changes: a tenant field it ignores (ipFamilyPolicy) or the infra Service itself
// (edited or deleted behind our back). It runs the same ensure as EnsureLoadBalancer, which
// writes only when Merge finds a difference, so events caused by our own writes cost nothing
// but cache reads.
type driftSync struct {
	b *Balancer
	q *queue
}

func newDriftSync(b *Balancer) *driftSync {
	d := &driftSync{b: b}
	d.q = newQueue("lb-drift", d.sync)
	return d
}

func (d *driftSync) run(ctx context.Context, workers int) { d.q.run(ctx, workers) }

func (d *driftSync) tenantServiceHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Service)
			n, ok2 := newObj.(*corev1.Service)
			if ok1 && ok2 && d.b.Wants(n) && !reflect.DeepEqual(o.Spec.IPFamilyPolicy, n.Spec.IPFamilyPolicy) {
				d.q.add(keyOf(n))
			}
		},
	}
}

func (d *driftSync) infraServiceHandler() toolscache.ResourceEventHandler {
	enqueue := func(obj any) {
		if o := objectOf(obj); o != nil {
			if key, ok := d.b.tenantKey(o); ok {
				d.q.add(key)
			}
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Service)
			n, ok2 := newObj.(*corev1.Service)
			if ok1 && ok2 && (!reflect.DeepEqual(o.Spec, n.Spec) || !maps.Equal(o.Annotations, n.Annotations) || !maps.Equal(o.Labels, n.Labels)) {
				enqueue(n)
			}
		},
		DeleteFunc: enqueue,
	}
}

func (d *driftSync) sync(ctx context.Context, key types.NamespacedName) error {
	svc, err := d.b.tenantView().services.Services(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// Only Services whose owner (upstream or classSync) already holds its finalizer, so a
	// re-created infra Service is always cleaned up with the tenant Service.
	if !d.b.Wants(svc) || svc.DeletionTimestamp != nil {
		return nil
	}
	if (d.b.ownClass(svc) && !hasFinalizer(svc)) || (!d.b.ownClass(svc) && !servicehelper.HasLBFinalizer(svc)) {
		return nil
	}
	if _, err := d.b.ensure(ctx, svc); err != nil {
		if _, refused := AsRefusal(err); refused {
			return nil // reported by the owner's sync; only a change of the Service can fix it
		}
		return err
	}
	return nil
}
