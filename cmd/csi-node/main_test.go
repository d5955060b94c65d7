package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, `(default "unix:///csi/csi.sock")`},
		{[]string{"--help"}, 0, `--node-id`},
		{[]string{"--help"}, 0, `(default "/dev/disk/by-id")`},
		{[]string{"--help"}, 0, `(default 16)`},
		{[]string{"--config", "x.yaml", "--max-volumes-per-node", "0"}, 2, "--max-volumes-per-node must be at least 1, got 0"},
		{[]string{"--config", "x.yaml", "--device-dir", ""}, 2, "--device-dir must not be empty"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}
