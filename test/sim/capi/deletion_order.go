package capi

import (
	"fmt"
	"math"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// Deletion priorities of Cluster API's MachineSet controller (higher goes first).
const (
	mustDelete        = 100.0
	shouldDeleteFirst = 80.0
	betterDelete      = 50.0
	couldDelete       = 20.0
	mustNotDelete     = 0.0
	tenDays           = 864000.0 // seconds
)

// deletePriority is one of Cluster API's MachineSet deletion orders: machines already being
// deleted first, then those annotated cluster.x-k8s.io/delete-machine, then unhealthy ones
// (no Node yet, or NodeHealthy=False), then by the order's rule.
type deletePriority func(m *clusterv1.Machine, now time.Time) float64

func commonPriority(m *clusterv1.Machine) (float64, bool) {
	switch {
	case m.DeletionTimestamp != nil:
		return mustDelete, true
	case hasKey(m.Annotations, clusterv1.DeleteMachineAnnotation):
		return shouldDeleteFirst, true
	case !machineHealthy(m):
		return betterDelete, true
	}
	return 0, false
}

// oldestPriority grows with age towards betterDelete: older machines go first.
func oldestPriority(m *clusterv1.Machine, now time.Time) float64 {
	if p, ok := commonPriority(m); ok {
		return p
	}
	if m.CreationTimestamp.IsZero() {
		return mustNotDelete
	}
	age := now.Sub(m.CreationTimestamp.Time).Seconds()
	if age < 0 {
		return mustNotDelete
	}
	return betterDelete * (1 - math.Exp(-age/tenDays))
}

func newestPriority(m *clusterv1.Machine, now time.Time) float64 {
	if p, ok := commonPriority(m); ok {
		return p
	}
	return betterDelete - oldestPriority(m, now)
}

// randomPriority is Cluster API's default "Random" order. Despite the name every healthy
// machine gets the same priority, and ties are broken by name, so it is deterministic.
func randomPriority(m *clusterv1.Machine, _ time.Time) float64 {
	if p, ok := commonPriority(m); ok {
		return p
	}
	return couldDelete
}

func priorityFor(order clusterv1.MachineSetDeletionOrder) (deletePriority, error) {
	switch order {
	case clusterv1.RandomMachineSetDeletionOrder, "":
		return randomPriority, nil
	case clusterv1.NewestMachineSetDeletionOrder:
		return newestPriority, nil
	case clusterv1.OldestMachineSetDeletionOrder:
		return oldestPriority, nil
	}
	return nil, fmt.Errorf("unsupported deletion order %q: must be one of Random, Newest or Oldest", order)
}

// machinesToDelete returns the n machines to delete first, highest priority first, ties by
// name, as Cluster API's getMachinesToDeletePrioritized.
func machinesToDelete(machines []*clusterv1.Machine, n int, prio deletePriority, now time.Time) []*clusterv1.Machine {
	if n <= 0 {
		return nil
	}
	sorted := append([]*clusterv1.Machine(nil), machines...)
	sort.SliceStable(sorted, func(i, j int) bool {
		pi, pj := prio(sorted[i], now), prio(sorted[j], now)
		if pi == pj {
			return sorted[i].Name < sorted[j].Name
		}
		return pi > pj
	})
	return sorted[:min(n, len(sorted))]
}

func machineHealthy(m *clusterv1.Machine) bool {
	if m.Status.NodeRef.Name == "" {
		return false
	}
	for _, t := range []string{clusterv1.MachineNodeHealthyCondition, clusterv1.MachineHealthCheckSucceededCondition} {
		if c := meta.FindStatusCondition(m.Status.Conditions, t); c != nil && c.Status == metav1.ConditionFalse {
			return false
		}
	}
	return true
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
