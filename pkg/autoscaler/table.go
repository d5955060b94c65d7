package autoscaler

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	toolscache "k8s.io/client-go/tools/cache"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// table answers the calls cluster-autoscaler makes on every loop (NodeGroups,
// NodeGroupTargetSize, NodeGroupForNode, NodeGroupNodes) from maps that the informers' event
// handlers keep current, with each group's NodeGroup message built once per change of its
// MachineDeployment. Read through the cache's client.Reader, every call copied the objects it
// touched into fresh lists (a NodeGroups call at 100 groups copied all 100
// MachineDeployments) and built its answer anew; on a 2-core box that garbage, through the GC
// cycles it caused, was the gRPC p99 above a millisecond.
//
// The maps hold the cache's own objects (read-only, as everywhere in view) and the answers
// apply the cache path's rules (view.asGroup, deploymentOf, setOf, machineOf,
// preferMachine, registeredWith). A handler runs just after the cache stored the object, so
// the table is never ahead of the cache; scaling calls keep reading the cache and wait until
// the table shows their writes as well (waitReplicas).
type table struct {
	view *view

	mu sync.RWMutex
	// groups are all cached MachineDeployments by name, node groups or not.
	groups map[string]*groupEntry
	sets   map[string]*clusterv1.MachineSet
	// setsOf are MachineSets by the name of their controlling MachineDeployment.
	setsOf byName[*clusterv1.MachineSet]
	// machines are Machines by name, byProviderID by spec.providerID and bySet by the name of
	// their controlling MachineSet.
	machines     map[string]*clusterv1.Machine
	byProviderID byName[*clusterv1.Machine]
	bySet        byName[*clusterv1.Machine]
	// haveNodes tells whether tenant Nodes are tracked; nodes counts them by providerID.
	haveNodes bool
	nodes     map[string]int
	// list is the NodeGroups answer, nil after any MachineDeployment changed, and listWire its
	// encoding, which the server's codec sends for it (see encoded).
	list     *protos.NodeGroupsResponse
	listWire []byte

	synced []func() bool
}

// groupEntry is a MachineDeployment and, if it is a node group, its message.
type groupEntry struct {
	md  *clusterv1.MachineDeployment
	g   nodeGroup
	ok  bool              // view.asGroup held
	msg *protos.NodeGroup // g.proto(), shared by every answer until md changes: read-only
}

func newTable(v *view) *table {
	return &table{
		view:         v,
		groups:       map[string]*groupEntry{},
		sets:         map[string]*clusterv1.MachineSet{},
		setsOf:       byName[*clusterv1.MachineSet]{},
		machines:     map[string]*clusterv1.Machine{},
		byProviderID: byName[*clusterv1.Machine]{},
		bySet:        byName[*clusterv1.Machine]{},
		nodes:        map[string]int{},
	}
}

// register adds the table's handlers to the infra informers and, if nodes is set, to the
// tenant Node informer; both caches must not have been started.
func (t *table) register(ctx context.Context, ic *infra.Client, nodes cache.Cache) error {
	for _, w := range []struct {
		obj   client.Object
		index func(obj any, keep bool)
	}{
		{&clusterv1.MachineDeployment{}, t.indexDeployment},
		{&clusterv1.MachineSet{}, t.indexSet},
		{&clusterv1.Machine{}, t.indexMachine},
	} {
		synced, err := ic.WatchSynced(ctx, w.obj, t.handler(w.index))
		if err != nil {
			return fmt.Errorf("keeping the node-group table: %w", err)
		}
		t.synced = append(t.synced, synced)
	}
	if nodes == nil {
		return nil
	}
	t.haveNodes = true
	inf, err := nodes.GetInformer(ctx, &corev1.Node{})
	if err != nil {
		return fmt.Errorf("tenant Node informer: %w", err)
	}
	reg, err := inf.AddEventHandler(t.handler(t.indexNode))
	if err != nil {
		return fmt.Errorf("watching tenant Nodes: %w", err)
	}
	t.synced = append(t.synced, reg.HasSynced)
	return nil
}

// hasSynced reports whether every handler has seen its informer's first list.
func (t *table) hasSynced() bool {
	for _, s := range t.synced {
		if !s() {
			return false
		}
	}
	return true
}

// handler applies index (keep: add or replace, else remove) under the table's lock; an update
// is one step, so no call sees the object missing in between.
func (t *table) handler(index func(obj any, keep bool)) toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			t.mu.Lock()
			defer t.mu.Unlock()
			index(obj, true)
		},
		UpdateFunc: func(old, obj any) {
			t.mu.Lock()
			defer t.mu.Unlock()
			index(old, false)
			index(obj, true)
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			index(obj, false)
		},
	}
}

// The index functions run with t.mu held. Every change of a MachineDeployment drops the
// NodeGroups answer (list) with it.

func (t *table) indexDeployment(obj any, keep bool) {
	md, ok := obj.(*clusterv1.MachineDeployment)
	if !ok {
		return
	}
	t.list, t.listWire = nil, nil
	if !keep {
		delete(t.groups, md.Name)
		return
	}
	e := &groupEntry{md: md}
	if e.g, e.ok = t.view.asGroup(md); e.ok {
		e.msg = e.g.proto()
	}
	t.groups[md.Name] = e
}

func (t *table) indexSet(obj any, keep bool) {
	ms, ok := obj.(*clusterv1.MachineSet)
	if !ok {
		return
	}
	setKey(t.sets, ms.Name, ms, keep)
	if ref := clusterController(ms, "MachineDeployment"); ref != nil {
		t.setsOf.set(ref.Name, ms, keep)
	}
}

func (t *table) indexMachine(obj any, keep bool) {
	m, ok := obj.(*clusterv1.Machine)
	if !ok {
		return
	}
	setKey(t.machines, m.Name, m, keep)
	if m.Spec.ProviderID != "" {
		t.byProviderID.set(m.Spec.ProviderID, m, keep)
	}
	if ref := clusterController(m, "MachineSet"); ref != nil {
		t.bySet.set(ref.Name, m, keep)
	}
}

func (t *table) indexNode(obj any, keep bool) {
	n, ok := obj.(*corev1.Node)
	if !ok || n.Spec.ProviderID == "" {
		return
	}
	switch {
	case keep:
		t.nodes[n.Spec.ProviderID]++
	case t.nodes[n.Spec.ProviderID] <= 1:
		delete(t.nodes, n.Spec.ProviderID)
	default:
		t.nodes[n.Spec.ProviderID]--
	}
}

// setKey stores v under k, or deletes k when keep is false.
func setKey[V any](m map[string]V, k string, v V, keep bool) {
	if keep {
		m[k] = v
	} else {
		delete(m, k)
	}
}

// nodeGroups is the NodeGroups answer: the node groups that are not paused, sorted by id. It
// is built once per change and shared: read-only.
func (t *table) nodeGroups() *protos.NodeGroupsResponse {
	t.mu.RLock()
	list := t.list
	t.mu.RUnlock()
	if list != nil {
		return list
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.list == nil {
		entries := make([]*groupEntry, 0, len(t.groups))
		for _, e := range t.groups {
			if e.ok && !paused(e.md) {
				entries = append(entries, e)
			}
		}
		slices.SortFunc(entries, func(a, b *groupEntry) int { return strings.Compare(a.g.ID, b.g.ID) })
		resp := &protos.NodeGroupsResponse{NodeGroups: make([]*protos.NodeGroup, len(entries))}
		for i, e := range entries {
			resp.NodeGroups[i] = e.msg
		}
		t.list = resp
		// Should it fail, the codec encodes the answer per call and reports the error there.
		t.listWire, _ = Codec().Marshal(resp)
	}
	return t.list
}

// encoded is the server codec's shortcut (wireCodec.encoded): the bytes of the current
// NodeGroups answer. An answer that a change has replaced since is encoded as usual.
func (t *table) encoded(v any) ([]byte, bool) {
	resp, ok := v.(*protos.NodeGroupsResponse)
	if !ok {
		return nil, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if resp != t.list || t.listWire == nil {
		return nil, false
	}
	return t.listWire, true
}

// group resolves a node-group id from a request, with view.group's answers.
func (t *table) group(id string) (*groupEntry, error) {
	name, err := ParseGroupID(id, t.view.scope.Namespace)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errGroupNotFound, err)
	}
	t.mu.RLock()
	e := t.groups[name]
	t.mu.RUnlock()
	switch {
	case e == nil:
		return nil, groupMissing(id)
	case !e.ok:
		return nil, t.view.notAGroup(id)
	}
	return e, nil
}

// showsReplicas reports whether the table holds MachineDeployment name with replicas.
func (t *table) showsReplicas(name string, replicas int32) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e := t.groups[name]
	return e != nil && targetSize(e.md) == replicas
}

// groupForNode is NodeGroupForNode's lookup: the group of the Machine that instance id names,
// nil if there is none or it is paused.
func (t *table) groupForNode(id string) *groupEntry {
	if id == "" {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	var m *clusterv1.Machine
	if name, ok := ParsePendingInstanceID(id, t.view.scope.Namespace); ok {
		m = t.view.pendingMachine(t.machines[name])
	} else {
		for _, c := range t.byProviderID[id] {
			m = t.view.preferMachine(m, c)
		}
	}
	if m == nil {
		return nil
	}
	// The lookups cannot fail: they are map reads.
	md, _ := t.view.deploymentOf(m, func(name string) (*clusterv1.MachineSet, error) {
		return t.sets[name], nil
	}, func(name string) (*clusterv1.MachineDeployment, error) {
		if e := t.groups[name]; e != nil {
			return e.md, nil
		}
		return nil, nil
	})
	if md == nil {
		return nil
	}
	if e := t.groups[md.Name]; e.ok && !paused(e.md) {
		return e
	}
	return nil
}

// instances is NodeGroupNodes' answer for group e: its Machines (controlled by a MachineSet
// that e's MachineDeployment controls, UIDs checked), sorted by name.
func (t *table) instances(e *groupEntry) []*protos.Instance {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var machines []*clusterv1.Machine
	for _, ms := range t.setsOf[e.md.Name] {
		if !t.view.setOf(e.md, ms) {
			continue
		}
		for _, m := range t.bySet[ms.Name] {
			if t.view.machineOf(ms, m) {
				machines = append(machines, m)
			}
		}
	}
	slices.SortFunc(machines, func(a, b *clusterv1.Machine) int { return strings.Compare(a.Name, b.Name) })
	nodeExists := func(providerID string) bool { return t.nodes[providerID] > 0 }
	out := make([]*protos.Instance, len(machines))
	for i, m := range machines {
		out[i] = InstanceFor(m, registeredWith(m, t.haveNodes, nodeExists))
	}
	return out
}

// byName is a multi-map from a key to objects, one per name.
type byName[T client.Object] map[string][]T

// set adds obj under key (replacing its namesake), or removes its namesake when keep is false.
func (ix byName[T]) set(key string, obj T, keep bool) {
	list := ix[key]
	i := slices.IndexFunc(list, func(o T) bool { return o.GetName() == obj.GetName() })
	switch {
	case keep && i >= 0:
		list[i] = obj
	case keep:
		list = append(list, obj)
	case i >= 0:
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(ix, key)
	} else {
		ix[key] = list
	}
}
