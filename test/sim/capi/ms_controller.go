package capi

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// msReconciler plays Cluster API's MachineSet controller: it creates Machines (with their
// KubevirtMachines cloned from the template) up to spec.replicas and deletes the surplus in
// the MachineSet's deletion order.
type msReconciler struct{ reconcilerBase }

func (r *msReconciler) setupWithManager(mgr manager.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-capi-machineset").
		For(&clusterv1.MachineSet{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return r.opts.wants(o.(*clusterv1.MachineSet).Spec.ClusterName)
		}))).
		Owns(&clusterv1.Machine{}).
		Watches(&clusterv1.Cluster{}, handler.EnqueueRequestsFromMapFunc(r.clusterToMSs)).
		Complete(r)
}

func (r *msReconciler) clusterToMSs(ctx context.Context, o client.Object) []reconcile.Request {
	var list clusterv1.MachineSetList
	if err := r.client.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, ms := range list.Items {
		if ms.Spec.ClusterName == o.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ms)})
		}
	}
	return reqs
}

func (r *msReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ms := &clusterv1.MachineSet{}
	if err := r.client.Get(ctx, req.NamespacedName, ms); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	machines, err := r.machines(ctx, ms)
	if err != nil {
		return ctrl.Result{}, err
	}
	paused, err := r.paused(ctx, ms.Spec.ClusterName, ms)
	if err != nil {
		return ctrl.Result{}, err
	}
	if paused {
		return ctrl.Result{}, r.setMSStatus(ctx, ms, machines, true)
	}
	if ms.DeletionTimestamp != nil {
		return ctrl.Result{}, r.reconcileDelete(ctx, ms, machines)
	}
	if !controllerutil.ContainsFinalizer(ms, clusterv1.MachineSetFinalizer) {
		err := simmgr.Update(ctx, r.client, r.reader, ms, false, func(ms *clusterv1.MachineSet) bool {
			return controllerutil.AddFinalizer(ms, clusterv1.MachineSetFinalizer)
		})
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to MachineSet %s: %w", req, err)
		}
	}

	// Machines being deleted still count, as in Cluster API: a replacement is created only
	// once they are gone, and a scale-down picks them first.
	diff := len(machines) - int(deref(ms.Spec.Replicas))
	switch {
	case diff < 0:
		for range -diff {
			m, err := r.createMachine(ctx, ms)
			if err != nil {
				return ctrl.Result{}, err
			}
			machines = append(machines, m)
		}
	case diff > 0:
		prio, err := priorityFor(ms.Spec.Deletion.Order)
		if err != nil {
			return ctrl.Result{}, err
		}
		for _, m := range machinesToDelete(machines, diff, prio, time.Now()) {
			if m.DeletionTimestamp != nil {
				continue
			}
			ctrl.LoggerFrom(ctx).Info("Deleting Machine (scale down)", "machine", m.Name, "order", ms.Spec.Deletion.Order)
			if err := r.client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("deleting Machine %s/%s: %w", m.Namespace, m.Name, err)
			}
		}
	}
	return ctrl.Result{}, r.setMSStatus(ctx, ms, machines, false)
}

// machines lists the Machines the MachineSet controls, uncached so a Machine created in the
// previous pass is counted.
func (r *msReconciler) machines(ctx context.Context, ms *clusterv1.MachineSet) ([]*clusterv1.Machine, error) {
	sel, err := metav1.LabelSelectorAsSelector(&ms.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("MachineSet %s/%s selector: %w", ms.Namespace, ms.Name, err)
	}
	var list clusterv1.MachineList
	if err := r.reader.List(ctx, &list, client.InNamespace(ms.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing Machines of %s/%s: %w", ms.Namespace, ms.Name, err)
	}
	var out []*clusterv1.Machine
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], ms) {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// machineName follows spec.machineNaming.template (default "{{ .machineSet.name }}-{{ .random }}").
func machineName(ms *clusterv1.MachineSet) string {
	tmpl := ms.Spec.MachineNaming.Template
	if tmpl == "" {
		tmpl = "{{ .machineSet.name }}-{{ .random }}"
	}
	r := strings.NewReplacer("{{ .machineSet.name }}", ms.Name, "{{ .cluster.name }}", ms.Spec.ClusterName, "{{ .random }}", rand.String(5))
	return r.Replace(tmpl)
}

// createMachine clones the infrastructure template into a KubevirtMachine and creates the
// Machine pointing at it, as Cluster API does (infrastructure first, Machine second, the
// infrastructure object deleted again if the Machine cannot be created).
func (r *msReconciler) createMachine(ctx context.Context, ms *clusterv1.MachineSet) (*clusterv1.Machine, error) {
	name := machineName(ms)
	labels := maps.Clone(ms.Spec.Template.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[clusterv1.MachineSetNameLabel] = ms.Name
	labels[clusterv1.ClusterNameLabel] = ms.Spec.ClusterName
	if md, ok := ms.Labels[clusterv1.MachineDeploymentNameLabel]; ok {
		labels[clusterv1.MachineDeploymentNameLabel] = md
	}

	ref := ms.Spec.Template.Spec.InfrastructureRef
	kvm, err := r.cloneInfra(ctx, ms, ref, name, labels)
	if err != nil {
		return nil, err
	}
	m := &clusterv1.Machine{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ms.Namespace, Labels: labels,
			Annotations:     maps.Clone(ms.Spec.Template.Annotations),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ms, clusterv1.GroupVersion.WithKind("MachineSet"))},
			Finalizers:      []string{clusterv1.MachineFinalizer},
		},
		Spec: *ms.Spec.Template.Spec.DeepCopy(),
	}
	m.Spec.ClusterName = ms.Spec.ClusterName
	m.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infraGroup, Kind: kindKubevirtMachine, Name: kvm.GetName()}
	if cr := m.Spec.Bootstrap.ConfigRef; cr.IsDefined() {
		// Cluster API clones the bootstrap template into a config named after the Machine;
		// the simulator has no bootstrap provider, so the reference names what it would be.
		m.Spec.Bootstrap.ConfigRef = clusterv1.ContractVersionedObjectReference{APIGroup: cr.APIGroup, Kind: strings.TrimSuffix(cr.Kind, "Template"), Name: name}
	}
	if err := r.client.Create(ctx, m); err != nil {
		if derr := r.client.Delete(ctx, kvm); client.IgnoreNotFound(derr) != nil {
			ctrl.LoggerFrom(ctx).Error(derr, "Cleaning up KubevirtMachine of a Machine that could not be created", "kubevirtMachine", name)
		}
		return nil, fmt.Errorf("creating Machine %s/%s: %w", ms.Namespace, name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created Machine", "machine", name)
	return m, nil
}

// cloneInfra creates the KubevirtMachine from the template's spec.template, owned by the
// MachineSet until the Machine controller adopts it.
func (r *msReconciler) cloneInfra(ctx context.Context, ms *clusterv1.MachineSet, ref clusterv1.ContractVersionedObjectReference, name string, labels map[string]string) (*unstructured.Unstructured, error) {
	if ref.Kind != kindKubevirtMT || ref.APIGroup != infraGroup {
		return nil, fmt.Errorf("MachineSet %s/%s: infrastructureRef %s.%s is not a CAPK KubevirtMachineTemplate", ms.Namespace, ms.Name, ref.Kind, ref.APIGroup)
	}
	tmpl := r.gvk.newTemplate()
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: ms.Namespace, Name: ref.Name}, tmpl); err != nil {
		return nil, fmt.Errorf("MachineSet %s/%s: reading %s %s: %w", ms.Namespace, ms.Name, ref.Kind, ref.Name, err)
	}
	spec, _, err := unstructured.NestedMap(tmpl.Object, "spec", "template", "spec")
	if err != nil {
		return nil, fmt.Errorf("%s %s: spec.template.spec: %w", ref.Kind, ref.Name, err)
	}
	kvm := r.gvk.newMachine()
	kvm.SetName(name)
	kvm.SetNamespace(ms.Namespace)
	kvmLabels := maps.Clone(labels)
	if tl, _, _ := unstructured.NestedStringMap(tmpl.Object, "spec", "template", "metadata", "labels"); tl != nil {
		maps.Copy(kvmLabels, tl)
	}
	kvm.SetLabels(kvmLabels)
	annotations := map[string]string{
		clusterv1.TemplateClonedFromNameAnnotation:      ref.Name,
		clusterv1.TemplateClonedFromGroupKindAnnotation: kindKubevirtMT + "." + infraGroup,
	}
	if ta, _, _ := unstructured.NestedStringMap(tmpl.Object, "spec", "template", "metadata", "annotations"); ta != nil {
		maps.Copy(annotations, ta)
	}
	kvm.SetAnnotations(annotations)
	kvm.SetOwnerReferences([]metav1.OwnerReference{{
		APIVersion: clusterv1.GroupVersion.String(), Kind: "MachineSet", Name: ms.Name, UID: ms.UID,
	}})
	if spec != nil {
		if err := unstructured.SetNestedMap(kvm.Object, spec, "spec"); err != nil {
			return nil, err
		}
	}
	if err := r.client.Create(ctx, kvm); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating KubevirtMachine %s/%s: %w", ms.Namespace, name, err)
	}
	return kvm, nil
}

func (r *msReconciler) setMSStatus(ctx context.Context, ms *clusterv1.MachineSet, machines []*clusterv1.Machine, paused bool) error {
	err := simmgr.Update(ctx, r.client, r.reader, ms, true, func(ms *clusterv1.MachineSet) bool {
		before := ms.Status.DeepCopy()
		meta.SetStatusCondition(&ms.Status.Conditions, pausedCondition(paused, ms.Generation))
		if paused {
			return !equality.Semantic.DeepEqual(before, &ms.Status)
		}
		var ready, available, upToDate int32
		for _, m := range machines {
			if meta.IsStatusConditionTrue(m.Status.Conditions, clusterv1.MachineReadyCondition) {
				ready++
			}
			if meta.IsStatusConditionTrue(m.Status.Conditions, clusterv1.MachineAvailableCondition) {
				available++
			}
			if meta.IsStatusConditionTrue(m.Status.Conditions, clusterv1.MachineUpToDateCondition) {
				upToDate++
			}
		}
		n := int32(len(machines))
		ms.Status.Replicas, ms.Status.ReadyReplicas = &n, &ready
		ms.Status.AvailableReplicas, ms.Status.UpToDateReplicas = &available, &upToDate
		if sel, err := metav1.LabelSelectorAsSelector(&ms.Spec.Selector); err == nil {
			ms.Status.Selector = sel.String()
		}
		ms.Status.ObservedGeneration = ms.Generation
		desired := deref(ms.Spec.Replicas)
		setBool(&ms.Status.Conditions, clusterv1.ScalingUpCondition, n < desired, ms.Generation)
		setBool(&ms.Status.Conditions, clusterv1.ScalingDownCondition, n > desired, ms.Generation)
		return !equality.Semantic.DeepEqual(before, &ms.Status)
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("updating status of MachineSet %s/%s: %w", ms.Namespace, ms.Name, err)
	}
	return nil
}

// reconcileDelete deletes every Machine and lets the MachineSet go once they are gone.
func (r *msReconciler) reconcileDelete(ctx context.Context, ms *clusterv1.MachineSet, machines []*clusterv1.Machine) error {
	for _, m := range machines {
		if m.DeletionTimestamp == nil {
			if err := r.client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting Machine %s/%s: %w", m.Namespace, m.Name, err)
			}
		}
	}
	if len(machines) > 0 {
		return nil // Machine deletion events bring us back
	}
	err := simmgr.Update(ctx, r.client, r.reader, ms, false, func(ms *clusterv1.MachineSet) bool {
		return controllerutil.RemoveFinalizer(ms, clusterv1.MachineSetFinalizer)
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("releasing MachineSet %s/%s: %w", ms.Namespace, ms.Name, err)
	}
	return nil
}
