package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// view answers every lookup from the informer caches. The objects it returns are the cache's
// own (no deep copy, which is what keeps a lookup in the microseconds): treat them as
// read-only and DeepCopy before changing anything.
type view struct {
	scope infra.Scope
	// groupSelector selects node-group MachineDeployments: the cluster-name label AND the
	// configured node-group selector.
	groupSelector labels.Selector
	infra         client.Reader
	// nodes reads tenant Nodes; nil when the provider runs without a tenant cache.
	nodes client.Reader
}

// errGroupNotFound is any node-group id that does not name a usable group of this tenant.
var errGroupNotFound = errors.New("node group not found")

// nodeGroup is a MachineDeployment that passed every check.
type nodeGroup struct {
	ID     string
	MD     *clusterv1.MachineDeployment
	Bounds Bounds
}

func newView(scope infra.Scope, selector map[string]string, infraReader, nodes client.Reader) *view {
	set := maps.Clone(selector)
	if set == nil {
		set = map[string]string{}
	}
	// Set last so that a selector can never widen the scope to another cluster.
	set[infra.LabelClusterName] = scope.ClusterName
	return &view{scope: scope, groupSelector: labels.SelectorFromSet(set), infra: infraReader, nodes: nodes}
}

var noCopy = client.UnsafeDisableDeepCopy

// ours is the ownership check for Cluster API objects: in the tenant namespace, labelled with
// the cluster name, and spec.clusterName agreeing. The cache is already scoped by namespace and
// label; checking again keeps the invariant independent of how the reader was built, and the
// spec check refuses an object whose label was edited to look like ours.
func (v *view) ours(obj client.Object, specClusterName string) bool {
	return v.scope.InCluster(obj) && specClusterName == v.scope.ClusterName
}

// asGroup checks md and returns it as a node group. The reason a labelled MachineDeployment
// is skipped is logged verbosely only: NodeGroups runs every loop, and the Event on the object
// (see events.go) is where the operator learns about it.
func (v *view) asGroup(md *clusterv1.MachineDeployment) (nodeGroup, bool) {
	if !v.ours(md, md.Spec.ClusterName) || !v.groupSelector.Matches(labels.Set(md.Labels)) {
		return nodeGroup{}, false
	}
	b, autoscaled, err := ParseBounds(md.Annotations)
	if !autoscaled {
		return nodeGroup{}, false
	}
	if err != nil {
		klog.V(4).InfoS("Skipping MachineDeployment with invalid autoscaler annotations",
			"machineDeployment", klog.KObj(md), "err", err)
		return nodeGroup{}, false
	}
	return nodeGroup{ID: GroupID(md.Namespace, md.Name), MD: md, Bounds: b}, true
}

// group resolves a node-group id from a request.
func (v *view) group(ctx context.Context, id string) (nodeGroup, error) {
	name, err := ParseGroupID(id, v.scope.Namespace)
	if err != nil {
		return nodeGroup{}, fmt.Errorf("%w: %w", errGroupNotFound, err)
	}
	md := &clusterv1.MachineDeployment{}
	if err := v.infra.Get(ctx, client.ObjectKey{Namespace: v.scope.Namespace, Name: name}, md, noCopy); err != nil {
		if apierrors.IsNotFound(err) {
			return nodeGroup{}, groupMissing(id)
		}
		return nodeGroup{}, fmt.Errorf("reading MachineDeployment %s/%s: %w", v.scope.Namespace, name, err)
	}
	g, ok := v.asGroup(md)
	if !ok {
		return nodeGroup{}, v.notAGroup(id)
	}
	return g, nil
}

// groupMissing and notAGroup are the two answers for a node-group id that names no group,
// from the cache (group) and from the table alike.
func groupMissing(id string) error { return fmt.Errorf("%w: %q", errGroupNotFound, id) }

func (v *view) notAGroup(id string) error {
	return fmt.Errorf("%w: %q is not an autoscaled MachineDeployment of cluster %s",
		errGroupNotFound, id, v.scope.ClusterName)
}

// machines returns the Machines of md from the cache: owned by a MachineSet that md controls,
// checked by owner UID so a recreated namesake does not inherit them. Sorted by name.
func (v *view) machines(ctx context.Context, md *clusterv1.MachineDeployment) ([]*clusterv1.Machine, error) {
	var sets clusterv1.MachineSetList
	if err := v.infra.List(ctx, &sets, client.InNamespace(v.scope.Namespace),
		client.MatchingFields{indexMachineDeployment: md.Name}, noCopy); err != nil {
		return nil, fmt.Errorf("listing MachineSets of %s: %w", md.Name, err)
	}
	var out []*clusterv1.Machine
	for i := range sets.Items {
		ms := &sets.Items[i]
		if !v.setOf(md, ms) {
			continue
		}
		var machines clusterv1.MachineList
		if err := v.infra.List(ctx, &machines, client.InNamespace(v.scope.Namespace),
			client.MatchingFields{indexMachineSet: ms.Name}, noCopy); err != nil {
			return nil, fmt.Errorf("listing Machines of MachineSet %s: %w", ms.Name, err)
		}
		for j := range machines.Items {
			if m := &machines.Items[j]; v.machineOf(ms, m) {
				out = append(out, m)
			}
		}
	}
	sortByName(out)
	return out, nil
}

// liveMachines is machines read straight from the API (no field indexes there: the cluster's
// MachineSets and Machines are listed by label and matched here): a scale-down decision weighs
// every deletion mark in the group, and another replica's marks may not have reached this
// replica's cache yet.
func (v *view) liveMachines(ctx context.Context, ic *infra.Client, md *clusterv1.MachineDeployment) ([]*clusterv1.Machine, error) {
	var sets clusterv1.MachineSetList
	if err := ic.ListInClusterLive(ctx, &sets); err != nil {
		return nil, fmt.Errorf("listing MachineSets of %s: %w", md.Name, err)
	}
	owned := map[string]*clusterv1.MachineSet{}
	for i := range sets.Items {
		if ms := &sets.Items[i]; v.setOf(md, ms) {
			owned[ms.Name] = ms
		}
	}
	var machines clusterv1.MachineList
	if err := ic.ListInClusterLive(ctx, &machines); err != nil {
		return nil, fmt.Errorf("listing Machines of %s: %w", md.Name, err)
	}
	var out []*clusterv1.Machine
	for i := range machines.Items {
		m := &machines.Items[i]
		if ref := clusterController(m, "MachineSet"); ref != nil && owned[ref.Name] != nil && v.machineOf(owned[ref.Name], m) {
			out = append(out, m)
		}
	}
	sortByName(out)
	return out, nil
}

// setOf and machineOf are the ownership rules both listings apply: this cluster's objects,
// controlled by the very owner (name and UID).
func (v *view) setOf(md *clusterv1.MachineDeployment, ms *clusterv1.MachineSet) bool {
	return v.ours(ms, ms.Spec.ClusterName) && controlledBy(ms, "MachineDeployment", md)
}

func (v *view) machineOf(ms *clusterv1.MachineSet, m *clusterv1.Machine) bool {
	return v.ours(m, m.Spec.ClusterName) && controlledBy(m, "MachineSet", ms)
}

func sortByName(machines []*clusterv1.Machine) {
	sort.Slice(machines, func(i, j int) bool { return machines[i].Name < machines[j].Name })
}

// machineByInstance resolves an instance id (a providerID, or a pending id from
// NodeGroupNodes) to a Machine of this cluster; nil if there is none. The id is
// tenant-controlled, so it is only ever used as a cache key.
func (v *view) machineByInstance(ctx context.Context, id string) (*clusterv1.Machine, error) {
	if id == "" {
		return nil, nil
	}
	if name, ok := ParsePendingInstanceID(id, v.scope.Namespace); ok {
		m := &clusterv1.Machine{}
		if err := v.infra.Get(ctx, client.ObjectKey{Namespace: v.scope.Namespace, Name: name}, m, noCopy); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("reading Machine %s: %w", name, err)
		}
		return v.pendingMachine(m), nil
	}
	var list clusterv1.MachineList
	if err := v.infra.List(ctx, &list, client.InNamespace(v.scope.Namespace),
		client.MatchingFields{indexProviderID: id}, noCopy); err != nil {
		return nil, fmt.Errorf("looking up Machine by providerID: %w", err)
	}
	var found *clusterv1.Machine
	for i := range list.Items {
		found = v.preferMachine(found, &list.Items[i])
	}
	return found, nil
}

// preferMachine is the rule that picks, among the Machines with one providerID, the one a Node
// belongs to: m replaces found if m is this cluster's and found is nil or being deleted while m
// is not. Two Machines with one providerID only happen by mistake; the one not being deleted is
// the one the Node belongs to now.
func (v *view) preferMachine(found, m *clusterv1.Machine) *clusterv1.Machine {
	if !v.ours(m, m.Spec.ClusterName) {
		return found
	}
	if found == nil || (!found.DeletionTimestamp.IsZero() && m.DeletionTimestamp.IsZero()) {
		return m
	}
	return found
}

// pendingMachine is the check on the Machine a pending instance id names (nil if none).
func (v *view) pendingMachine(m *clusterv1.Machine) *clusterv1.Machine {
	if m == nil || !v.ours(m, m.Spec.ClusterName) {
		return nil
	}
	return m
}

// groupOfMachine returns the node group Machine m belongs to, following its controller chain
// Machine → MachineSet → MachineDeployment with ownership and UID checks at every step.
func (v *view) groupOfMachine(ctx context.Context, m *clusterv1.Machine) (nodeGroup, bool, error) {
	md, err := v.deploymentOf(m, func(name string) (*clusterv1.MachineSet, error) {
		ms := &clusterv1.MachineSet{}
		if err := v.infra.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: name}, ms, noCopy); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		return ms, nil
	}, func(name string) (*clusterv1.MachineDeployment, error) {
		md := &clusterv1.MachineDeployment{}
		if err := v.infra.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: name}, md, noCopy); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		return md, nil
	})
	if md == nil || err != nil {
		return nodeGroup{}, false, err
	}
	g, ok := v.asGroup(md)
	return g, ok, nil
}

// deploymentOf follows Machine m's controller chain Machine → MachineSet → MachineDeployment
// through the given lookups (which answer nil for a missing object), checking ownership and
// UIDs at every step; nil if the chain breaks anywhere.
func (v *view) deploymentOf(m *clusterv1.Machine, set func(name string) (*clusterv1.MachineSet, error),
	deployment func(name string) (*clusterv1.MachineDeployment, error)) (*clusterv1.MachineDeployment, error) {
	msRef := clusterController(m, "MachineSet")
	if msRef == nil {
		return nil, nil
	}
	ms, err := set(msRef.Name)
	if ms == nil || err != nil {
		return nil, err
	}
	if ms.UID != msRef.UID || !v.ours(ms, ms.Spec.ClusterName) {
		return nil, nil
	}
	mdRef := clusterController(ms, "MachineDeployment")
	if mdRef == nil {
		return nil, nil
	}
	md, err := deployment(mdRef.Name)
	if md == nil || err != nil {
		return nil, err
	}
	if md.UID != mdRef.UID {
		return nil, nil
	}
	return md, nil
}

// registered reports whether a tenant Node exists for m: Cluster API's nodeRef, or a Node in
// the tenant cache with m's providerID (which sees a registration before Cluster API does).
func (v *view) registered(ctx context.Context, m *clusterv1.Machine) bool {
	return registeredWith(m, v.nodes != nil, func(providerID string) bool {
		var nodes corev1.NodeList
		if err := v.nodes.List(ctx, &nodes, client.MatchingFields{indexProviderID: providerID}, noCopy); err != nil {
			klog.V(2).InfoS("Cannot look up tenant Node; counting the Machine as not registered",
				"machine", klog.KObj(m), "err", err)
			return false
		}
		return len(nodes.Items) > 0
	})
}

// registeredWith is the registration rule: Cluster API's nodeRef, or (when the provider has
// a tenant Node cache) a Node with m's providerID, as nodeExists tells.
func registeredWith(m *clusterv1.Machine, haveNodes bool, nodeExists func(providerID string) bool) bool {
	if m.Status.NodeRef.IsDefined() {
		return true
	}
	if !haveNodes || m.Spec.ProviderID == "" {
		return false
	}
	return nodeExists(m.Spec.ProviderID)
}

// paused reports a MachineDeployment that must not be scaled: paused in its spec or by the
// Cluster API paused annotation. Cluster API would not act on a change anyway, and
// cluster-autoscaler should learn that instead of waiting for nodes that never come.
func paused(md *clusterv1.MachineDeployment) bool {
	if md.Spec.Paused != nil && *md.Spec.Paused {
		return true
	}
	_, ok := md.Annotations[AnnotationPaused]
	return ok
}

// targetSize is the cached replica count; an unset one is 0, as Cluster API's defaulting
// webhook would only ever set it from the min-size annotation or 1 before we see it.
func targetSize(md *clusterv1.MachineDeployment) int32 {
	if md.Spec.Replicas == nil {
		return 0
	}
	return *md.Spec.Replicas
}
