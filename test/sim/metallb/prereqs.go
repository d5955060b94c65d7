package metallb

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// serviceAccount is the name MetalLB's manifests give the controller.
const serviceAccount = "controller"

// image is what the Pod object claims to run; nothing pulls it.
const image = "quay.io/metallb/controller:v0.16.1"

// ensurePrerequisites creates what MetalLB's manifests would: the namespace, the controller's
// ServiceAccount and its Pod object. MetalLB v0.16 reads its own Pod at start-up (to own the
// ConfigurationState) and exits if it is missing. Existing objects are kept, so a second
// Start against the same cluster works.
func ensurePrerequisites(ctx context.Context, cl client.Client, namespace, podName string) error {
	labels := map[string]string{"app": "metallb", "component": "controller"}
	noToken := false
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		// As in MetalLB's manifests. envtest disables the ServiceAccount admission plugin,
		// but a real apiserver would refuse the Pod without it (no token controller runs
		// here to create "default").
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: serviceAccount}},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: podName, Labels: labels},
			Spec: corev1.PodSpec{
				ServiceAccountName:           serviceAccount,
				AutomountServiceAccountToken: &noToken,
				Containers: []corev1.Container{{
					Name:  "controller",
					Image: image,
					Args:  []string{"--port=7472", "--log-level=info"},
				}},
			},
		},
	}
	for _, obj := range objs {
		if err := cl.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s/%s for metallb-controller: %w", obj, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	// A ConfigurationState left by an earlier controller in this cluster would make the new
	// one look ready before it is; the controller recreates it once its reconcilers run.
	state := &unstructured.Unstructured{}
	state.SetGroupVersionKind(configStateGVK)
	state.SetNamespace(namespace)
	state.SetName("controller")
	if err := cl.Delete(ctx, state); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting stale ConfigurationState %s/controller: %w", namespace, err)
	}
	return nil
}
