package capi

import (
	"context"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// templateCRD is the name of CAPK's KubevirtMachineTemplate CRD.
const templateCRD = "kubevirtmachinetemplates." + infraGroup

// templateReconciler plays the KubevirtMachineTemplate controller CAPK added for the cluster
// autoscaler's scale-from-zero: it publishes status.capacity (cpu, memory) computed from the
// template's VM spec. Released CAPK up to v0.1.10 has neither the controller nor the field;
// the reconciler therefore only writes when the installed CRD declares status.capacity, and
// otherwise does nothing — exactly what a cluster with the older CAPK shows.
type templateReconciler struct{ reconcilerBase }

func (r *templateReconciler) setupWithManager(mgr manager.Manager) error {
	crdToTemplates := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(r.gvk.template.GroupVersion().WithKind(kindKubevirtMT + "List"))
		if err := r.client.List(ctx, list); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
		return reqs
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-capk-kubevirtmachinetemplate").
		For(r.gvk.newTemplate()).
		Watches(&apiextensionsv1.CustomResourceDefinition{}, crdToTemplates,
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == templateCRD }))).
		Complete(r)
}

func (r *templateReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	t := r.gvk.newTemplate()
	if err := r.client.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	declared, subresource, err := r.capacityDeclared(ctx)
	if err != nil || !declared {
		return ctrl.Result{}, err
	}
	spec, err := vmSpecAt(t, "spec", "template", "spec", "virtualMachineTemplate", "spec")
	if err != nil {
		return ctrl.Result{}, nil // nothing to compute from; CAPK would not publish either
	}
	capacity := map[string]any{}
	for name, q := range templateCapacity(&spec.Template.Spec) {
		capacity[string(name)] = q.String()
	}
	err = simmgr.Update(ctx, r.client, r.reader, t, subresource, func(t *unstructured.Unstructured) bool {
		current, _, _ := unstructured.NestedMap(t.Object, "status", "capacity")
		if equality.Semantic.DeepEqual(current, capacity) {
			return false
		}
		_ = unstructured.SetNestedMap(t.Object, capacity, "status", "capacity")
		return true
	})
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("publishing capacity of %s %s: %w", kindKubevirtMT, req, err)
	}
	return ctrl.Result{}, nil
}

// capacityDeclared reports whether the served version of the template CRD has
// status.capacity, and whether status is a subresource (then it must be written through it).
func (r *templateReconciler) capacityDeclared(ctx context.Context) (declared, subresource bool, err error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := r.reader.Get(ctx, client.ObjectKey{Name: templateCRD}, crd); err != nil {
		return false, false, fmt.Errorf("reading CRD %s: %w", templateCRD, err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != r.gvk.template.Version || v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			continue
		}
		status, ok := v.Schema.OpenAPIV3Schema.Properties["status"]
		if !ok {
			return false, false, nil
		}
		_, declared = status.Properties["capacity"]
		return declared, v.Subresources != nil && v.Subresources.Status != nil, nil
	}
	return false, false, nil
}
