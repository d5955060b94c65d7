package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	vcs := func(settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8"}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	tests := []struct {
		name    string
		version string
		bi      *debug.BuildInfo
		want    string
	}{
		{"no build info", "dev", nil, "ccm dev (" + runtime.Version() + ")"},
		{"no VCS", "dev", vcs(), "ccm dev (go1.26.8)"},
		{"clean revision", "v1.2.3", vcs("vcs.revision", "0123456789abcdef0123", "vcs.modified", "false"), "ccm v1.2.3 (go1.26.8, revision 0123456789ab)"},
		{"dirty revision", "dev", vcs("vcs.revision", "0123456789abcdef", "vcs.modified", "true"), "ccm dev (go1.26.8, revision 0123456789ab-dirty)"},
		{"short revision", "dev", vcs("vcs.revision", "abc"), "ccm dev (go1.26.8, revision abc)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := format("ccm", tt.version, tt.bi); got != tt.want {
				t.Errorf("format() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	got := String("csi-node")
	if !strings.HasPrefix(got, "csi-node "+Version+" (go") {
		t.Errorf("String() = %q, want prefix %q", got, "csi-node "+Version+" (go")
	}
}
