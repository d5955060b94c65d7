package capi

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"strconv"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// mdReconciler plays Cluster API's MachineDeployment controller for the single-MachineSet
// case: it keeps one MachineSet at the deployment's replica count and aggregates its status.
// Template changes are applied to that MachineSet for future Machines instead of rolling
// existing ones (no rollouts are simulated).
type mdReconciler struct{ reconcilerBase }

func (r *mdReconciler) setupWithManager(mgr manager.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sim-capi-machinedeployment").
		For(&clusterv1.MachineDeployment{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return r.opts.wants(o.(*clusterv1.MachineDeployment).Spec.ClusterName)
		}))).
		Owns(&clusterv1.MachineSet{}).
		Watches(&clusterv1.Cluster{}, handler.EnqueueRequestsFromMapFunc(r.clusterToMDs)).
		Complete(r)
}

func (r *mdReconciler) clusterToMDs(ctx context.Context, o client.Object) []reconcile.Request {
	var mds clusterv1.MachineDeploymentList
	if err := r.client.List(ctx, &mds, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, md := range mds.Items {
		if md.Spec.ClusterName == o.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&md)})
		}
	}
	return reqs
}

func (r *mdReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	md := &clusterv1.MachineDeployment{}
	if err := r.client.Get(ctx, req.NamespacedName, md); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	paused, err := r.paused(ctx, md.Spec.ClusterName, md)
	if err != nil {
		return ctrl.Result{}, err
	}
	if paused {
		return ctrl.Result{}, r.setMDStatus(ctx, md, nil, true)
	}
	if md.DeletionTimestamp != nil {
		return r.reconcileDelete(ctx, md)
	}
	// The defaulting webhook would have done this at admission.
	if DefaultMachineDeployment(md) {
		return ctrl.Result{}, r.client.Update(ctx, md)
	}
	if !controllerutil.ContainsFinalizer(md, clusterv1.MachineDeploymentFinalizer) {
		err := simmgr.Update(ctx, r.client, r.reader, md, false, func(md *clusterv1.MachineDeployment) bool {
			return controllerutil.AddFinalizer(md, clusterv1.MachineDeploymentFinalizer)
		})
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to MachineDeployment %s: %w", req, err)
		}
	}

	sets, err := r.machineSets(ctx, md)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(sets) == 0 {
		ms, err := r.createMachineSet(ctx, md)
		if err != nil {
			return ctrl.Result{}, err
		}
		sets = append(sets, ms)
	} else if err := r.syncMachineSet(ctx, md, sets[0]); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.setMDStatus(ctx, md, sets, false)
}

// paused reports whether reconciliation of obj is paused (Cluster API checks this before
// anything else, deletion included). The Cluster must exist, except for an object being
// deleted after its Cluster.
func (b *reconcilerBase) paused(ctx context.Context, clusterName string, obj client.Object) (bool, error) {
	c := &clusterv1.Cluster{}
	err := b.client.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: clusterName}, c)
	switch {
	case apierrors.IsNotFound(err) && obj.GetDeletionTimestamp() != nil:
		return hasKey(obj.GetAnnotations(), clusterv1.PausedAnnotation), nil
	case err != nil:
		return false, fmt.Errorf("getting Cluster %s/%s of %s: %w", obj.GetNamespace(), clusterName, obj.GetName(), err)
	}
	return isPaused(c, obj), nil
}

// isPaused is Cluster API's annotations.IsPaused: the Cluster is paused, or the object carries
// the cluster.x-k8s.io/paused annotation. MachineDeployment spec.paused is different: it only
// pauses rollouts, and scaling goes on.
func isPaused(c *clusterv1.Cluster, o metav1.Object) bool {
	return (c.Spec.Paused != nil && *c.Spec.Paused) || hasKey(o.GetAnnotations(), clusterv1.PausedAnnotation)
}

func pausedCondition(paused bool, gen int64) metav1.Condition {
	if paused {
		return metav1.Condition{Type: clusterv1.PausedCondition, Status: metav1.ConditionTrue, Reason: "Paused", ObservedGeneration: gen}
	}
	return metav1.Condition{Type: clusterv1.PausedCondition, Status: metav1.ConditionFalse, Reason: "NotPaused", ObservedGeneration: gen}
}

// machineSets lists the MachineSets this deployment controls, newest first, uncached.
func (r *mdReconciler) machineSets(ctx context.Context, md *clusterv1.MachineDeployment) ([]*clusterv1.MachineSet, error) {
	var list clusterv1.MachineSetList
	if err := r.reader.List(ctx, &list, client.InNamespace(md.Namespace)); err != nil {
		return nil, fmt.Errorf("listing MachineSets of %s/%s: %w", md.Namespace, md.Name, err)
	}
	var out []*clusterv1.MachineSet
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], md) {
			out = append(out, &list.Items[i])
		}
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].CreationTimestamp.After(out[j-1].CreationTimestamp.Time); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// createMachineSet creates the deployment's MachineSet, named like Cluster API does:
// <deployment>-<5 random chars>, with machine-template-hash "<template hash>-<same chars>"
// added to its labels, selector and template.
func (r *mdReconciler) createMachineSet(ctx context.Context, md *clusterv1.MachineDeployment) (*clusterv1.MachineSet, error) {
	base := md.Name + "-"
	if len(base) > 58 {
		base = base[:58]
	}
	suffix := rand.String(5)
	hash, err := templateHash(&md.Spec.Template)
	if err != nil {
		return nil, err
	}
	unique := fmt.Sprintf("%d-%s", hash, suffix)
	selector := md.Spec.Selector.DeepCopy()
	if selector.MatchLabels == nil {
		selector.MatchLabels = map[string]string{}
	}
	selector.MatchLabels[clusterv1.MachineDeploymentUniqueLabel] = unique
	tmplLabels := maps.Clone(md.Spec.Template.Labels)
	if tmplLabels == nil {
		tmplLabels = map[string]string{}
	}
	tmplLabels[clusterv1.MachineDeploymentUniqueLabel] = unique
	labels := maps.Clone(tmplLabels)
	labels[clusterv1.MachineDeploymentNameLabel] = md.Name
	labels[clusterv1.ClusterNameLabel] = md.Spec.ClusterName

	ms := &clusterv1.MachineSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: base + suffix, Namespace: md.Namespace, Labels: labels,
			Annotations:     msAnnotations(md),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(md, clusterv1.GroupVersion.WithKind("MachineDeployment"))},
			Finalizers:      []string{clusterv1.MachineSetFinalizer},
		},
		Spec: clusterv1.MachineSetSpec{
			ClusterName: md.Spec.ClusterName,
			Replicas:    ptrTo(*md.Spec.Replicas),
			Selector:    *selector,
			Template: clusterv1.MachineTemplateSpec{
				ObjectMeta: clusterv1.ObjectMeta{Labels: tmplLabels, Annotations: maps.Clone(md.Spec.Template.Annotations)},
				Spec:       *md.Spec.Template.Spec.DeepCopy(),
			},
			MachineNaming: md.Spec.MachineNaming,
			Deletion:      clusterv1.MachineSetDeletionSpec{Order: md.Spec.Deletion.Order},
		},
	}
	if err := r.client.Create(ctx, ms); err != nil {
		return nil, fmt.Errorf("creating MachineSet for %s/%s: %w", md.Namespace, md.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created MachineSet", "machineSet", ms.Name, "replicas", *ms.Spec.Replicas)
	return ms, nil
}

// msAnnotations are the annotations Cluster API copies from a deployment to its MachineSets,
// plus the revision and replica bookkeeping it adds.
func msAnnotations(md *clusterv1.MachineDeployment) map[string]string {
	a := map[string]string{}
	for k, v := range md.Annotations {
		if k != clusterv1.PausedAnnotation && k != "kubectl.kubernetes.io/last-applied-configuration" {
			a[k] = v
		}
	}
	a[clusterv1.RevisionAnnotation] = "1"
	a[clusterv1.DesiredReplicasAnnotation] = strconv.Itoa(int(*md.Spec.Replicas))
	a[clusterv1.MaxReplicasAnnotation] = strconv.Itoa(int(*md.Spec.Replicas) + 1) // maxSurge 1
	return a
}

func templateHash(t *clusterv1.MachineTemplateSpec) (uint32, error) {
	b, err := json.Marshal(t.Spec)
	if err != nil {
		return 0, fmt.Errorf("hashing machine template: %w", err)
	}
	h := fnv.New32a()
	_, _ = h.Write(b)
	return h.Sum32(), nil
}

// syncMachineSet carries replicas (the scale path, also when spec.paused: that only pauses
// rollouts), deletion order and, unless rollouts are paused, the template.
func (r *mdReconciler) syncMachineSet(ctx context.Context, md *clusterv1.MachineDeployment, ms *clusterv1.MachineSet) error {
	err := simmgr.Update(ctx, r.client, r.reader, ms, false, func(ms *clusterv1.MachineSet) bool {
		before := ms.DeepCopy()
		ms.Spec.Replicas = ptrTo(*md.Spec.Replicas)
		ms.Spec.Deletion.Order = md.Spec.Deletion.Order
		if ms.Annotations == nil {
			ms.Annotations = map[string]string{}
		}
		maps.Copy(ms.Annotations, msAnnotations(md))
		if md.Spec.Paused == nil || !*md.Spec.Paused {
			ms.Spec.Template.Spec = *md.Spec.Template.Spec.DeepCopy()
			ms.Spec.Template.Annotations = maps.Clone(md.Spec.Template.Annotations)
		}
		return !equality.Semantic.DeepEqual(before, ms)
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("syncing MachineSet %s/%s: %w", ms.Namespace, ms.Name, err)
	}
	return nil
}

// setMDStatus aggregates the MachineSets' counters and publishes the selector the /scale
// subresource reads.
func (r *mdReconciler) setMDStatus(ctx context.Context, md *clusterv1.MachineDeployment, sets []*clusterv1.MachineSet, paused bool) error {
	err := simmgr.Update(ctx, r.client, r.reader, md, true, func(md *clusterv1.MachineDeployment) bool {
		before := md.Status.DeepCopy()
		meta.SetStatusCondition(&md.Status.Conditions, pausedCondition(paused, md.Generation))
		if paused {
			return !equality.Semantic.DeepEqual(before, &md.Status)
		}
		var replicas, ready, available, upToDate int32
		for _, ms := range sets {
			replicas += deref(ms.Status.Replicas)
			ready += deref(ms.Status.ReadyReplicas)
			available += deref(ms.Status.AvailableReplicas)
			upToDate += deref(ms.Status.UpToDateReplicas)
		}
		if sel, err := metav1.LabelSelectorAsSelector(&md.Spec.Selector); err == nil {
			md.Status.Selector = sel.String()
		}
		md.Status.Replicas, md.Status.ReadyReplicas = &replicas, &ready
		md.Status.AvailableReplicas, md.Status.UpToDateReplicas = &available, &upToDate
		md.Status.ObservedGeneration = md.Generation
		desired := deref(md.Spec.Replicas)
		switch {
		case replicas < desired:
			md.Status.Phase = string(clusterv1.MachineDeploymentPhaseScalingUp)
		case replicas > desired:
			md.Status.Phase = string(clusterv1.MachineDeploymentPhaseScalingDown)
		case available == desired:
			md.Status.Phase = string(clusterv1.MachineDeploymentPhaseRunning)
		}
		setBool(&md.Status.Conditions, clusterv1.MachineDeploymentAvailableCondition, available >= desired, md.Generation)
		setBool(&md.Status.Conditions, clusterv1.MachineDeploymentScalingUpCondition, replicas < desired, md.Generation)
		setBool(&md.Status.Conditions, clusterv1.MachineDeploymentScalingDownCondition, replicas > desired, md.Generation)
		return !equality.Semantic.DeepEqual(before, &md.Status)
	})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("updating status of MachineDeployment %s/%s: %w", md.Namespace, md.Name, err)
	}
	return nil
}

// reconcileDelete deletes the MachineSets (there is no garbage collector here, and Cluster API
// deletes them explicitly too) and lets the deployment go once they are gone.
func (r *mdReconciler) reconcileDelete(ctx context.Context, md *clusterv1.MachineDeployment) (ctrl.Result, error) {
	sets, err := r.machineSets(ctx, md)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, ms := range sets {
		if ms.DeletionTimestamp == nil {
			if err := r.client.Delete(ctx, ms); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("deleting MachineSet %s/%s: %w", ms.Namespace, ms.Name, err)
			}
		}
	}
	if len(sets) > 0 {
		return ctrl.Result{}, nil // the MachineSets' deletion events bring us back
	}
	err = simmgr.Update(ctx, r.client, r.reader, md, false, func(md *clusterv1.MachineDeployment) bool {
		return controllerutil.RemoveFinalizer(md, clusterv1.MachineDeploymentFinalizer)
	})
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("releasing MachineDeployment %s/%s: %w", md.Namespace, md.Name, err)
	}
	return ctrl.Result{}, nil
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// setBool sets a v1beta2 condition of type t to True or False.
func setBool(conds *[]metav1.Condition, t string, v bool, gen int64) {
	c := metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: "Not" + t, ObservedGeneration: gen}
	if v {
		c.Status, c.Reason = metav1.ConditionTrue, t
	}
	meta.SetStatusCondition(conds, c)
}
