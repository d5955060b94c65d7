package autoscaler

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

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

// OwedCandidates counts the requested Machines that carry this provider's mark although no
// replica may have been taken off for them yet, so that a DeleteNodes call takes those off too
// (capped by UncoveredMarks, see owedMarks):
//   - ones this very call marked in an earlier attempt whose /scale write lost a race (ours),
//     whatever their state now. The MachineSet controller deletes marked Machines in its own
//     order (name, for equal priority), so for the surplus an earlier call left it may have
//     deleted one of ours instead of that call's Machine; that Machine then waits for our
//     replica. Skipping ours because they are "already on their way out" left one marked
//     Machine and one replica too many behind per such swap (issue 21);
//   - ones an earlier call marked and then died before its /scale write: marked, not being
//     deleted, and not remembered by this process (remembered) as covered.
//
// Each Machine counts once, however often the request names it.
func OwedCandidates(requested []*clusterv1.Machine, ours, remembered func(*clusterv1.Machine) bool) int {
	n := 0
	seen := map[types.UID]bool{}
	for _, m := range requested {
		if seen[m.UID] {
			continue
		}
		seen[m.UID] = true
		if ours(m) || (m.DeletionTimestamp.IsZero() && MarkedByUs(m) && !remembered(m)) {
			n++
		}
	}
	return n
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

// OrphanedMarks returns how many replicas are owed for marks that no call can still be about
// to cover: marks of ours older than after (at now) on Machines not being deleted, as far as
// the group's uncovered marks (UncoveredMarks) exceed the younger marks. Younger marks may
// belong to a call of another replica that has not written /scale yet, so each is assumed
// uncovered; a mark without a readable time counts as old.
//
// This is what finds a replica lost with its call: a call that died (or failed) after the
// MachineSet controller had deleted its freshly marked Machine in the place of an earlier
// call's Machine leaves that Machine marked with no replica for it, and nothing names it
// again.
//
// While there are fewer Machines than replicas (a scale-up the MachineSet controller has not
// made yet, or cannot: a paused Cluster), nothing is owed: every mark looks uncovered then, and
// taking replicas off for them on every loop would eat the scale-up one replica at a time.
func OrphanedMarks(machines []*clusterv1.Machine, replicas int32, now time.Time, after time.Duration) int {
	if len(machines) < int(replicas) {
		return 0
	}
	old, young := 0, 0
	for _, m := range machines {
		if !m.DeletionTimestamp.IsZero() || !MarkedByUs(m) {
			continue
		}
		if markedAt, ok := MarkTime(m); ok && now.Sub(markedAt) < after {
			young++
		} else {
			old++
		}
	}
	return min(old, max(0, UncoveredMarks(machines, replicas)-young))
}

// MarkTime is when this provider marked m, from our annotation.
func MarkTime(m *clusterv1.Machine) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339, m.Annotations[AnnotationScaleDownRequested])
	return t, err == nil
}
