package autoscaler

import (
	"errors"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

func planMachine(name string, mut ...func(*clusterv1.Machine)) *clusterv1.Machine {
	m := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))}}
	for _, f := range mut {
		f(m)
	}
	return m
}

func names(ms []*clusterv1.Machine) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestPlanDelete(t *testing.T) {
	now := metav1.Now()
	a, b := planMachine("a"), planMachine("b")
	deleting := planMachine("d", func(m *clusterv1.Machine) { m.DeletionTimestamp = &now })
	marked := planMachine("m", func(m *clusterv1.Machine) { m.Annotations = map[string]string{AnnotationScaleDownRequested: "t"} })
	// A delete-machine annotation someone else set took no replica off: it is marked anew.
	foreignMark := planMachine("f", func(m *clusterv1.Machine) { m.Annotations = map[string]string{AnnotationDeleteMachine: "x"} })
	in := func(m *clusterv1.Machine) ResolvedNode { return ResolvedNode{Node: m.Name, Machine: m, GroupID: "g"} }

	tests := []struct {
		name    string
		nodes   []ResolvedNode
		want    []string
		wantErr error
	}{
		{"two", []ResolvedNode{in(a), in(b)}, []string{"a", "b"}, nil},
		{"duplicate", []ResolvedNode{in(a), in(a)}, []string{"a"}, nil},
		{"skips deleting and marked", []ResolvedNode{in(deleting), in(a), in(marked)}, []string{"a"}, nil},
		{"foreign delete-machine annotation", []ResolvedNode{in(foreignMark)}, []string{"f"}, nil},
		{"nothing to do", []ResolvedNode{in(marked)}, []string{}, nil},
		{"unknown node", []ResolvedNode{in(a), {Node: "kubevirt://x"}}, nil, ErrNotInGroup},
		{"other group", []ResolvedNode{in(a), {Node: "b", Machine: b, GroupID: "h"}}, nil, ErrNotInGroup},
		{"no group", []ResolvedNode{{Node: "b", Machine: b}}, nil, ErrNotInGroup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PlanDelete("g", tt.nodes, MarkedByUs)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(names(got), tt.want) {
				t.Fatalf("got %v, want %v", names(got), tt.want)
			}
		})
	}
}

func TestPickUnregistered(t *testing.T) {
	now := metav1.Now()
	older := planMachine("old")
	newer := planMachine("new", func(m *clusterv1.Machine) { m.CreationTimestamp = metav1.NewTime(time.Unix(2000, 0)) })
	sameTimeB := planMachine("b")
	reg := planMachine("reg")
	gone := planMachine("gone", func(m *clusterv1.Machine) { m.DeletionTimestamp = &now })
	ms := []*clusterv1.Machine{older, reg, sameTimeB, gone, newer}
	registered := func(m *clusterv1.Machine) bool { return m.Name == "reg" }
	never := func(*clusterv1.Machine) bool { return false }

	for n, want := range map[int][]string{
		-1: {}, 0: {}, 1: {"new"}, 2: {"new", "old"}, 3: {"new", "old", "b"}, 10: {"new", "old", "b"},
	} {
		if got := names(PickUnregistered(ms, n, registered, never)); !reflect.DeepEqual(got, want) {
			t.Errorf("n=%d: got %v, want %v", n, got, want)
		}
	}
}

func TestUncoveredMarks(t *testing.T) {
	now := metav1.Now()
	mark := func(m *clusterv1.Machine) { m.Annotations = map[string]string{AnnotationScaleDownRequested: "t"} }
	deleting := func(m *clusterv1.Machine) { m.DeletionTimestamp = &now }
	a, b, c := planMachine("a"), planMachine("b"), planMachine("c")
	ma, mb := planMachine("ma", mark), planMachine("mb", mark)
	gone := planMachine("gone", mark, deleting)
	tests := []struct {
		name     string
		machines []*clusterv1.Machine
		replicas int32
		want     int
	}{
		{"no marks", []*clusterv1.Machine{a, b}, 2, 0},
		{"mark and replica taken off", []*clusterv1.Machine{ma, b}, 1, 0},
		{"crash between mark and scale", []*clusterv1.Machine{ma, b}, 2, 1},
		{"two marks, one replica taken off", []*clusterv1.Machine{ma, mb, c}, 2, 1},
		{"two marks, none taken off", []*clusterv1.Machine{ma, mb, c}, 3, 2},
		{"deleting Machines count for neither side", []*clusterv1.Machine{gone, ma, b}, 1, 0},
		{"a scale-up in flight does not cover a mark", []*clusterv1.Machine{ma, b}, 3, 1},
		{"surplus without marks", []*clusterv1.Machine{a, b, c}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UncoveredMarks(tt.machines, tt.replicas); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestOwedCandidates(t *testing.T) {
	now := metav1.Now()
	mark := func(m *clusterv1.Machine) { m.Annotations = map[string]string{AnnotationScaleDownRequested: "t"} }
	deleting := func(m *clusterv1.Machine) { m.DeletionTimestamp = &now }
	plain, marked := planMachine("plain"), planMachine("marked", mark)
	mine, mineGone := planMachine("mine", mark), planMachine("mine-gone", mark, deleting)
	remembered, deletingMark := planMachine("remembered", mark), planMachine("deleting", mark, deleting)
	ours := func(m *clusterv1.Machine) bool { return m == mine || m == mineGone }
	isRemembered := func(m *clusterv1.Machine) bool { return m == remembered || m == mine }
	tests := []struct {
		name      string
		requested []*clusterv1.Machine
		want      int
	}{
		{"unmarked", []*clusterv1.Machine{plain}, 0},
		{"marked by a call that died", []*clusterv1.Machine{marked}, 1},
		{"named twice", []*clusterv1.Machine{marked, marked}, 1},
		{"marked and covered by this process", []*clusterv1.Machine{remembered}, 0},
		{"being deleted, not ours", []*clusterv1.Machine{deletingMark}, 0},
		{"this call's own mark, even if remembered", []*clusterv1.Machine{mine}, 1},
		// Issue 21: the MachineSet controller deleted it for an earlier call's replica.
		{"this call's own mark, deleted in another's place", []*clusterv1.Machine{mineGone}, 1},
		{"all of them", []*clusterv1.Machine{plain, marked, remembered, deletingMark, mine, mineGone}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OwedCandidates(tt.requested, ours, isRemembered); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestOrphanedMarks(t *testing.T) {
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) func(*clusterv1.Machine) {
		return func(m *clusterv1.Machine) {
			m.Annotations = map[string]string{AnnotationScaleDownRequested: now.Add(-ago).Format(time.RFC3339)}
		}
	}
	deleting := func(m *clusterv1.Machine) { m.DeletionTimestamp = &metav1.Time{Time: now} }
	a, b := planMachine("a"), planMachine("b")
	old1, old2 := planMachine("old1", at(3*time.Minute)), planMachine("old2", at(time.Hour))
	young := planMachine("young", at(10*time.Second))
	oldGone := planMachine("old-gone", at(time.Hour), deleting)
	garbled := planMachine("garbled", func(m *clusterv1.Machine) { m.Annotations = map[string]string{AnnotationScaleDownRequested: "soon"} })
	const after = 2 * time.Minute
	tests := []struct {
		name     string
		machines []*clusterv1.Machine
		replicas int32
		want     int
	}{
		{"no marks", []*clusterv1.Machine{a, b}, 2, 0},
		{"old mark, replica taken off", []*clusterv1.Machine{old1, a}, 1, 0},
		{"old mark left behind", []*clusterv1.Machine{old1, a}, 2, 1},
		{"two old marks, one covered", []*clusterv1.Machine{old1, old2, a}, 2, 1},
		// The young mark may be a running call's that has not written /scale yet.
		{"young mark only", []*clusterv1.Machine{young, a}, 2, 0},
		{"old and young, one uncovered", []*clusterv1.Machine{old1, young, a}, 2, 0},
		{"old and young, both uncovered", []*clusterv1.Machine{old1, young, a}, 3, 1},
		{"deleting Machines are not marks", []*clusterv1.Machine{oldGone, a}, 1, 0},
		{"unreadable time counts as old", []*clusterv1.Machine{garbled, a}, 2, 1},
		{"scale-up not made yet", []*clusterv1.Machine{old1, a}, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OrphanedMarks(tt.machines, tt.replicas, now, after); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}
