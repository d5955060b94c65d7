package cli

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestApplyMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1) // reads without changing
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	for _, tc := range []struct {
		name    string
		files   map[string]string
		env     string
		want    int64
		wantErr bool
	}{
		{name: "cgroup v2 limit", files: map[string]string{"memory.max": "134217728\n"}, want: 107374182},
		{name: "cgroup v2 unlimited", files: map[string]string{"memory.max": "max\n"}},
		{name: "cgroup v1 limit", files: map[string]string{"memory/memory.limit_in_bytes": "67108864\n"}, want: 53687091},
		{name: "cgroup v1 unlimited", files: map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}},
		{name: "v2 read before v1", files: map[string]string{"memory.max": "100000000", "memory/memory.limit_in_bytes": "50000000"}, want: 80000000},
		{name: "no cgroup files"},
		{name: "GOMEMLIMIT set wins", files: map[string]string{"memory.max": "134217728"}, env: "200MiB"},
		{name: "unreadable value", files: map[string]string{"memory.max": "lots"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			debug.SetMemoryLimit(before)
			got, err := applyMemoryLimit(root, func(k string) string {
				if k == "GOMEMLIMIT" {
					return tc.env
				}
				return ""
			})
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("applyMemoryLimit = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
			// The runtime holds what was returned; nothing changes when nothing was set.
			want := tc.want
			if want == 0 {
				want = before
			}
			if now := debug.SetMemoryLimit(-1); now != want {
				t.Errorf("runtime memory limit %d, want %d", now, want)
			}
		})
	}
}

// TestContainerMemoryLimitHere reads this machine's own cgroup, whichever version it has, as
// the programs do at start.
func TestContainerMemoryLimitHere(t *testing.T) {
	limit, ok, err := containerMemoryLimit(cgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	if ok && limit <= 0 {
		t.Fatalf("limit %d reported as set", limit)
	}
	t.Logf("memory limit here: %d (set: %v)", limit, ok)
}

func TestApplyGCPercent(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	for _, tc := range []struct {
		name    string
		percent int
		env     string
		want    int // what the runtime holds afterwards
	}{
		{name: "program default", percent: 50, want: 50},
		{name: "GOGC set wins", percent: 50, env: "200", want: 100},
		{name: "no program default", want: 100},
	} {
		debug.SetGCPercent(100)
		set := applyGCPercent(tc.percent, func(k string) string {
			if k == "GOGC" {
				return tc.env
			}
			return ""
		})
		if now := debug.SetGCPercent(100); now != tc.want {
			t.Errorf("%s: runtime GC percent %d, want %d", tc.name, now, tc.want)
		}
		if (set != 0) != (tc.want != 100) {
			t.Errorf("%s: applyGCPercent reported %d", tc.name, set)
		}
	}
}
