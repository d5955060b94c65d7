package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun: usage errors exit 2 before anything is contacted; a config that cannot be loaded
// exits 1; --help lists the flags and exits 0.
func TestRun(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, tt := range []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, "--upstream-csi-labels"},
		{[]string{"--help"}, 0, "default: dry run"},
		{nil, 2, "--config string"},
		{[]string{"--config", missing, "extra"}, 2, "--config string"},
		{[]string{"--config", missing, "--upstream-csi-labels", "a=b,,=c"}, 2, "--upstream-csi-labels"},
		{[]string{"--config", missing}, 1, "loading config " + missing},
	} {
		var out bytes.Buffer
		if code := run(context.Background(), tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}
