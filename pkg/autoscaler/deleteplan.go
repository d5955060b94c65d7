package autoscaler

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// ErrNotInGroup is a DeleteNodes request naming a node the group does not own.
var ErrNotInGroup = errors.New("not in node group")

// ResolvedNode is one node of a DeleteNodes request after the lookups: the Machine it resolved
// to (nil if none of this cluster) and the id of the group that Machine belongs to ("" if none).
type ResolvedNode struct {
	// Node names the request entry in messages: its providerID, or its name if it had none.
	Node    string
	Machine *clusterv1.Machine
	GroupID string
}

// PlanDelete returns the Machines a DeleteNodes request for group must newly mark, in request
// order. Every node must resolve to a Machine of the group, or nothing is marked at all.
// Machines already being deleted, or already marked by an earlier call (marked reports those),
// are left out: their replica was already taken off, so a retried request changes nothing.
func PlanDelete(group string, nodes []ResolvedNode, marked func(*clusterv1.Machine) bool) ([]*clusterv1.Machine, error) {
	var foreign []string
	for _, n := range nodes {
		if n.Machine == nil || n.GroupID != group {
			foreign = append(foreign, n.Node)
		}
	}
	if len(foreign) > 0 {
		return nil, fmt.Errorf("%w %s: %s", ErrNotInGroup, group, strings.Join(foreign, ", "))
	}
	seen := map[types.UID]bool{}
	var out []*clusterv1.Machine
	for _, n := range nodes {
		m := n.Machine
		if seen[m.UID] {
			continue
		}
		seen[m.UID] = true
		if !m.DeletionTimestamp.IsZero() || marked(m) {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// PickUnregistered chooses up to n Machines to drop when a target size shrinks below the
// number of Machines: only ones without a Node (so no workload is lost), not being deleted and
// not already marked, newest first (least likely to be about to register).
func PickUnregistered(machines []*clusterv1.Machine, n int, registered, marked func(*clusterv1.Machine) bool) []*clusterv1.Machine {
	if n <= 0 {
		return nil
	}
	var pool []*clusterv1.Machine
	for _, m := range machines {
		if m.DeletionTimestamp.IsZero() && !marked(m) && !registered(m) {
			pool = append(pool, m)
		}
	}
	sort.SliceStable(pool, func(i, j int) bool {
		ti, tj := pool[i].CreationTimestamp, pool[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return pool[i].Name > pool[j].Name
	})
	if len(pool) > n {
		pool = pool[:n]
	}
	return pool
}

// MarkedByUs reports whether this provider already took a replica off for Machine m.
func MarkedByUs(m *clusterv1.Machine) bool {
	_, ok := m.Annotations[AnnotationScaleDownRequested]
	return ok
}

// UncoveredMarks returns how many of the Machines marked by this provider (per the annotation)
// have had no replica taken off: the process died between the mark and the /scale write. The
// MachineSet controller removes as many Machines as it has above replicas, marked ones first, so
// that surplus is what the marks are owed; marks beyond it will never be acted on. Machines
// already being deleted count for neither side. A stale view errs on the safe side: a Machine
// the cache still shows although it is gone only adds to the surplus.
func UncoveredMarks(machines []*clusterv1.Machine, replicas int32) int {
	live, marked := 0, 0
	for _, m := range machines {
		if !m.DeletionTimestamp.IsZero() {
			continue
		}
		live++
		if MarkedByUs(m) {
			marked++
		}
	}
	return max(0, marked-max(0, live-int(replicas)))
}
