package autoscaler

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NewNodeCache builds the cache of the tenant cluster's Nodes the provider uses to tell a
// registered Machine (a Node with its providerID exists) from one still coming up. Only what
// that needs is kept: status, managed fields and annotations are dropped on arrival, which
// keeps a thousand Nodes to a few hundred kilobytes.
func NewNodeCache(cfg *rest.Config) (cache.Cache, error) {
	// Nodes only: client-go's scheme would register every API group.
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building tenant scheme: %w", err)
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme: scheme,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}: {Transform: slimNode},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("building tenant Node cache: %w", err)
	}
	return c, nil
}

func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // tombstones pass through
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels,
		},
		Spec: corev1.NodeSpec{ProviderID: n.Spec.ProviderID},
	}, nil
}
