package infra

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestScopedReader(t *testing.T) {
	ctx := context.Background()
	ours := map[string]string{LabelClusterName: "alpha"}
	cm := func(ns, name string, lbls map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
	}
	c := newFakeClient(t,
		vm("tenant-a", "worker-1", ours),
		vm("tenant-a", "beta-worker", map[string]string{LabelClusterName: "beta"}),
		vm("tenant-a", "unlabelled", nil),
		vm("tenant-b", "worker-1", ours),
		cm("tenant-a", "template", nil), cm("tenant-a", "template-ours", ours),
		cm("tenant-a", "template-beta", map[string]string{LabelClusterName: "beta"}),
		cm("tenant-b", "template", nil),
	)
	// ConfigMaps stand in for a NamespaceOnly type (KubevirtMachineTemplates in the autoscaler).
	c.namespaceOnly = map[schema.GroupVersionKind]bool{corev1.SchemeGroupVersion.WithKind("ConfigMap"): true}

	if err := c.Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: "worker-1"}, &kubevirtv1.VirtualMachine{}, client.UnsafeDisableDeepCopy); err != nil {
		t.Fatalf("Get(tenant-a/worker-1): %v", err)
	}
	for _, key := range []client.ObjectKey{
		{Namespace: "tenant-a", Name: "beta-worker"}, {Namespace: "tenant-a", Name: "unlabelled"},
		{Namespace: "tenant-b", Name: "worker-1"}, {Namespace: "", Name: "worker-1"},
		{Namespace: "tenant-a", Name: "../worker-1"}, {Namespace: "tenant-a", Name: "missing"},
	} {
		if err := c.Get(ctx, key, &kubevirtv1.VirtualMachine{}); !apierrors.IsNotFound(err) {
			t.Errorf("Get(%s) = %v, want NotFound", key, err)
		}
	}
	var vms kubevirtv1.VirtualMachineList
	if err := c.List(ctx, &vms); err != nil {
		t.Fatal(err)
	}
	if len(vms.Items) != 1 || vms.Items[0].Namespace != "tenant-a" || vms.Items[0].Name != "worker-1" {
		t.Fatalf("List = %v, want tenant-a/worker-1 only", vms.Items)
	}
	if err := c.List(ctx, &vms, client.InNamespace("tenant-b")); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("List in another namespace = %v, want a refusal", err)
	}

	// NamespaceOnly types: read by name unless labelled for another cluster, never listed.
	for name, want := range map[string]bool{"template": true, "template-ours": true, "template-beta": false} {
		err := c.Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: name}, &corev1.ConfigMap{})
		if got := err == nil; got != want || (err != nil && !apierrors.IsNotFound(err)) {
			t.Errorf("Get(namespace-only %s) = %v, want found=%v", name, err, want)
		}
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tenant-b", Name: "template"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("Get(namespace-only in tenant-b) = %v, want NotFound", err)
	}
	if err := c.List(ctx, &corev1.ConfigMapList{}); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("List of a namespace-only type = %v, want a refusal", err)
	}

	if err := c.IndexField(ctx, &kubevirtv1.VirtualMachine{}, "x", func(client.Object) []string { return nil }); err == nil {
		t.Error("IndexField on a reader-backed client succeeded")
	}
}

// TestNoRawAccess keeps pkg/infra the only package that talks to the infra API (DESIGN §3):
// no exported method or field of Client hands out anything that reads or writes past the
// scope — a controller-runtime client, reader, cache or informer, a REST config or transport.
// Client itself is a client.Reader, scoped (TestScopedReader); giving it a method that returns
// one, as Cache(), Client() and Live() once did, fails here.
func TestNoRawAccess(t *testing.T) {
	raw := map[string]reflect.Type{
		"client.Reader":     reflect.TypeFor[client.Reader](),
		"client.Writer":     reflect.TypeFor[client.Writer](),
		"subresources":      reflect.TypeFor[client.SubResourceClientConstructor](),
		"cache.Informers":   reflect.TypeFor[cache.Informers](),
		"http.RoundTripper": reflect.TypeFor[http.RoundTripper](),
	}
	leaks := func(ty reflect.Type) string {
		if ty.Kind() == reflect.Interface && ty.NumMethod() == 0 {
			return "an empty interface"
		}
		if ty == reflect.TypeFor[*rest.Config]() || ty == reflect.TypeFor[rest.Config]() || ty == reflect.TypeFor[*http.Client]() {
			return ty.String()
		}
		for name, iface := range raw {
			if ty.Implements(iface) {
				return name
			}
		}
		return ""
	}
	ct := reflect.TypeFor[*Client]()
	checked := 0
	for m := range ct.Methods() {
		for out := range m.Type.Outs() {
			checked++
			if what := leaks(out); what != "" {
				t.Errorf("(*infra.Client).%s returns %s (%s): raw infra access outside pkg/infra", m.Name, out, what)
			}
		}
	}
	for f := range ct.Elem().Fields() {
		if f.IsExported() {
			t.Errorf("infra.Client has an exported field %s", f.Name)
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d method results, want the whole API (≥ 20)", checked)
	}
}
