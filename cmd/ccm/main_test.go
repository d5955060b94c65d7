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
		{[]string{"--help"}, 0, "cloud-controller-manager"},
		{nil, 2, "error: --config is required"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}
