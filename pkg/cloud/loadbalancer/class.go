package loadbalancer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
)

// Finalizer keeps a tenant Service of our own load-balancer class until its infra Service is
// gone. It is distinct from the upstream service controller's finalizer so neither controller
// acts on the other's Services.
const Finalizer = "tenantcloud.io/load-balancer-cleanup"

// classSync serves tenant Services whose spec.loadBalancerClass is the Balancer's own class:
// the upstream service controller skips every Service with a class, so this small controller
// runs the same ensure/delete logic with its own finalizer. Status comes from statusSync as for
// every other Service.
type classSync struct {
	b *Balancer
	q *queue
}

func newClassSync(b *Balancer) *classSync {
	c := &classSync{b: b}
	c.q = newQueue("lb-class", c.sync)
	return c
}

func (c *classSync) run(ctx context.Context, workers int) { c.q.run(ctx, workers) }

func (c *classSync) handler() toolscache.ResourceEventHandler {
	enqueue := func(obj any) {
		if svc, ok := obj.(*corev1.Service); ok && (c.b.ownClass(svc) || hasFinalizer(svc)) {
			c.q.add(keyOf(svc))
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
	}
}

func (c *classSync) sync(ctx context.Context, key types.NamespacedName) error {
	t := c.b.tenantView()
	svc, err := t.services.Services(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil // the finalizer means we saw the deletion while it was pending
	}
	if err != nil {
		return err
	}
	if hasFinalizer(svc) && (svc.DeletionTimestamp != nil || !c.b.ownClass(svc) || svc.Spec.Type != corev1.ServiceTypeLoadBalancer) {
		if err := c.b.delete(ctx, svc); err != nil {
			return err
		}
		if svc.DeletionTimestamp == nil {
			if err := patchStatus(ctx, t, svc, corev1.LoadBalancerStatus{}); err != nil {
				return err
			}
		}
		return setFinalizer(ctx, t, svc, false)
	}
	if !c.b.ownClass(svc) || svc.DeletionTimestamp != nil {
		return nil
	}
	if !hasFinalizer(svc) {
		// Before any infra object exists, so the tenant cannot delete the Service without us
		// seeing it.
		if err := setFinalizer(ctx, t, svc, true); err != nil {
			return err
		}
	}
	_, err = c.b.ensure(ctx, svc)
	c.b.report(svc, err)
	if err == nil {
		c.b.status.q.add(key)
	}
	return err
}

func hasFinalizer(svc *corev1.Service) bool { return slices.Contains(svc.Finalizers, Finalizer) }

// setFinalizer adds or removes Finalizer with a merge patch guarded by resourceVersion, so a
// concurrent change of the finalizer list is retried rather than overwritten.
func setFinalizer(ctx context.Context, t *tenantView, svc *corev1.Service, present bool) error {
	fins := slices.DeleteFunc(slices.Clone(svc.Finalizers), func(f string) bool { return f == Finalizer })
	if present {
		fins = append(fins, Finalizer)
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"finalizers": fins, "resourceVersion": svc.ResourceVersion, "uid": svc.UID,
	}})
	if err != nil {
		return fmt.Errorf("encoding finalizer patch: %w", err)
	}
	_, err = t.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, body, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) && !present {
		return nil
	}
	if err != nil {
		return fmt.Errorf("patching finalizers of tenant Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}
