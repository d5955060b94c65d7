package infra

import (
	"context"
	"fmt"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Scale reads obj's /scale subresource from the apiserver (never a cache: a size decision must
// start from the current value). obj must be an object of this cluster (Scope.InCluster), a
// MachineDeployment the caller read; only its namespace and name are used for the request.
func (c *Client) Scale(ctx context.Context, obj client.Object) (*autoscalingv1.Scale, error) {
	if !c.scope.InCluster(obj) {
		return nil, c.refuse("read the scale of", obj, "not labelled for")
	}
	scale := &autoscalingv1.Scale{}
	if err := c.client.SubResource("scale").Get(ctx, keyOf(obj), scale); err != nil {
		return nil, fmt.Errorf("reading scale of %s %s: %w", c.groupResource(obj), obj.GetName(), err)
	}
	return scale, nil
}

// UpdateScale writes scale to obj's /scale subresource; scale's resourceVersion (that of the
// read it came from) makes a concurrent change fail the write with a conflict. obj must be an
// object of this cluster, as for Scale. The error is the API's, unwrapped, so that callers
// can retry on a conflict.
func (c *Client) UpdateScale(ctx context.Context, obj client.Object, scale *autoscalingv1.Scale) error {
	if !c.scope.InCluster(obj) {
		return c.refuse("scale", obj, "not labelled for")
	}
	return c.client.SubResource("scale").Update(ctx, keyOf(obj), client.WithSubResourceBody(scale))
}

// keyOf is a copy of obj for a request that needs only its type, namespace and name: the
// caller's object (possibly the cache's own) is never written into.
func keyOf(obj client.Object) client.Object {
	return obj.DeepCopyObject().(client.Object)
}

// CreateEvent records ev, which must be in the tenant namespace and about an object of it.
func (c *Client) CreateEvent(ctx context.Context, ev *corev1.Event) error {
	if ev.Namespace != c.scope.Namespace || ev.InvolvedObject.Namespace != c.scope.Namespace {
		return c.refuse("create", ev, "not about an object of")
	}
	return c.client.Create(ctx, ev)
}
