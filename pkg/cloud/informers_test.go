package cloud

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
)

// TestStripManagedFields: the tenant informers the framework shares hold Services, Nodes and
// EndpointSlices without managedFields and with everything else, and an informer already
// running is left as it is rather than failing the provider.
func TestStripManagedFields(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}, ManagedFields: mf}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", ManagedFields: mf}, Spec: corev1.NodeSpec{ProviderID: "kubevirt://vm-1"}}
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: meta("s1"), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}},
		node,
		&discoveryv1.EndpointSlice{ObjectMeta: meta("s1-abc"), AddressType: discoveryv1.AddressTypeIPv4},
	)
	factory := informers.NewSharedInformerFactory(client, 0)
	stripManagedFields(factory)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	factory.Start(ctx.Done())
	defer func() {
		cancel() // Shutdown waits for the informers, which stop with ctx
		factory.Shutdown()
	}()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}
	svcs, err := factory.Core().V1().Services().Lister().List(labels.Everything())
	if err != nil || len(svcs) != 1 {
		t.Fatalf("services %v, %v", svcs, err)
	}
	if s := svcs[0]; s.ManagedFields != nil || s.Labels["app"] != "s1" || s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("cached Service %+v: want no managedFields, labels and spec kept", s.ObjectMeta)
	}
	n, err := factory.Core().V1().Nodes().Lister().Get("n1")
	if err != nil || n.ManagedFields != nil || n.Spec.ProviderID != node.Spec.ProviderID {
		t.Errorf("cached Node %+v, %v: want no managedFields, providerID kept", n, err)
	}
	es, err := factory.Discovery().V1().EndpointSlices().Lister().EndpointSlices("default").Get("s1-abc")
	if err != nil || es.ManagedFields != nil || es.Labels["app"] != "s1-abc" {
		t.Errorf("cached EndpointSlice %+v, %v: want no managedFields, labels kept", es, err)
	}

	// Started informers cannot take a transform: logged, not fatal, and they keep working.
	stripManagedFields(factory)
	if _, err := factory.Core().V1().Services().Lister().Services("default").Get("s1"); err != nil {
		t.Errorf("after a late call: %v", err)
	}
}
