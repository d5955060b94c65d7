package infrastate

import (
	"slices"
	"testing"
)

func TestDiff(t *testing.T) {
	before := State{"Service a/x": "1", "DataVolume a/d": "5", "VMI a/vm": "spec:root"}
	for _, tc := range []struct {
		name    string
		after   State
		allowed []string
		want    []string
	}{
		{"unchanged", State{"Service a/x": "1", "DataVolume a/d": "5", "VMI a/vm": "spec:root"}, nil, nil},
		{"every kind of change", State{"Service a/x": "2", "VMI a/vm": "spec:root,tc-1=Ready", "Machine a/m": "9"}, nil, []string{
			"changed Service a/x (1 → 2)", "changed VMI a/vm (spec:root → spec:root,tc-1=Ready)", "created Machine a/m", "deleted DataVolume a/d",
		}},
		{"allowed changes left out", State{"Service a/x": "2", "DataVolume a/d": "5", "VMI a/vm": "spec:root", "Service a/lb": "3"},
			[]string{"Service a/x", "Service a/lb"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := before.Diff(tc.after, tc.allowed...); !slices.Equal(got, tc.want) {
				t.Errorf("Diff = %q, want %q", got, tc.want)
			}
		})
	}
}
