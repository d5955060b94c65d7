package harness

import (
	"errors"
	"testing"
)

func TestRequired(t *testing.T) {
	tests := []struct {
		spec, need string
		want       bool
	}{
		{"", NeedDisks, false},
		{"all", NeedDisks, true},
		{"all", NeedCapSysResource, true},
		{"all,-cap_sys_resource", NeedCapSysResource, false},
		{"all,-cap_sys_resource", NeedDisks, true},
		{" all , -cap_sys_resource ", NeedCapSysResource, false},
		{"disks", NeedDisks, true},
		{"disks", NeedBin, false},
		{"bin,disks", NeedBin, true},
		{"-disks", NeedDisks, false},
		{"alls", NeedDisks, false},
	}
	for _, tt := range tests {
		if got := required(tt.spec, tt.need); got != tt.want {
			t.Errorf("required(%q, %q) = %v, want %v", tt.spec, tt.need, got, tt.want)
		}
	}
}

// Require decides between skipping and failing by the environment; a met need does neither.
func TestRequire(t *testing.T) {
	tests := []struct {
		spec                string
		err                 error
		wantSkip, wantFatal bool
	}{
		{"", nil, false, false},
		{"all", nil, false, false},
		{"", errMissing, true, false},
		{"bin", errMissing, true, false},
		{"all", errMissing, false, true},
		{"all,-disks", errMissing, true, false},
		// A word that names no need would demand nothing: it fails rather than skip.
		{"1", errMissing, false, true},
		{"true", errMissing, false, true},
		{"all,-disk", errMissing, false, true},
		{"1", nil, false, false},
		{"nodes,-tool", errMissing, true, false},
	}
	for _, tt := range tests {
		t.Setenv(RequireEnv, tt.spec)
		r := &recorder{TB: t}
		func() {
			defer func() { _ = recover() }() // Skipf and Fatalf end the goroutine's test; the recorder panics instead
			Require(r, NeedDisks, tt.err)
		}()
		if r.skipped != tt.wantSkip || r.failed != tt.wantFatal {
			t.Errorf("%s=%q, err %v: skipped %v failed %v, want %v %v", RequireEnv, tt.spec, tt.err, r.skipped, r.failed, tt.wantSkip, tt.wantFatal)
		}
	}
}

var errMissing = errors.New("loop devices: not here")

// recorder records what Require asked of the test instead of doing it.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(string, ...any) {
	r.skipped = true
	panic("skip")
}

func (r *recorder) Fatalf(string, ...any) {
	r.failed = true
	panic("fatal")
}
