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
