// Package version reports what build of a tenantcloud program is running.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release, set at link time with
// -ldflags "-X github.com/tenantcloud/tenantcloud/pkg/version.Version=v1.2.3".
// It is a variable, not a constant, because the linker can only override variables.
var Version = "dev"

// String describes the running build, e.g. "ccm v1.2.3 (go1.26.8, revision 0123456789ab)".
func String(program string) string {
	// Without module support there is no build info; bi is then nil and format copes.
	bi, _ := debug.ReadBuildInfo()
	return format(program, Version, bi)
}

// format is String with its inputs passed in, so the formatting is testable without a VCS
// build.
func format(program, version string, bi *debug.BuildInfo) string {
	goVersion := runtime.Version()
	var revision, modified string
	if bi != nil {
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	details := []string{goVersion}
	if revision != "" {
		if len(revision) > 12 {
			revision = revision[:12]
		}
		if modified == "true" {
			// Uncommitted changes mean the revision alone does not identify the source.
			revision += "-dirty"
		}
		details = append(details, "revision "+revision)
	}
	return fmt.Sprintf("%s %s (%s)", program, version, strings.Join(details, ", "))
}
