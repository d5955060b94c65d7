package harness

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// RequireEnv names the environment variable that decides what a missing need does to a test:
// a comma-separated list of needs that must be met, "all" for every need, and "-<need>" to
// leave one out of "all". CI sets it (see .ci/run and the Makefile's test target), so a
// machine without, say, loop devices fails the storage suites instead of passing them hollow.
const RequireEnv = "TENANTCLOUD_REQUIRE"

// Needs a test can lack. Each is a property of the machine the tests run on, never of the
// code under test.
const (
	// NeedDisks: root, loop devices, losetup, mkfs and mount (the simulated guest disks and
	// every suite that formats or mounts them).
	NeedDisks = "disks"
	// NeedBlockDevices: block device nodes in /dev to point by-id links at.
	NeedBlockDevices = "block-devices"
	// NeedCapSysResource: CAP_SYS_RESOURCE, which ext4's online resize ioctl checks.
	NeedCapSysResource = "cap_sys_resource"
	// NeedBin: a binary `make bin` builds into bin/ (helm, cluster-autoscaler, …).
	NeedBin = "bin"
	// NeedTool: a program from PATH (the go tool, sleep, …).
	NeedTool = "tool"
	// NeedNodes: a real kubelet node (test/harness/node's Need says what that takes).
	NeedNodes = "nodes"
)

// knownNeeds are the words RequireEnv may name besides "all". A word outside them would
// demand nothing, so a typo or a guess such as "1" would let every suite skip quietly in the
// very run that set the variable to stop that: Require fails on it instead.
var knownNeeds = []string{NeedDisks, NeedBlockDevices, NeedCapSysResource, NeedBin, NeedTool, NeedNodes}

// badRequireWord returns the first word of spec that names no need, or "".
func badRequireWord(spec string) string {
	for _, w := range strings.Split(spec, ",") {
		w = strings.TrimSpace(w)
		if w == "" || w == "all" || slices.Contains(knownNeeds, strings.TrimPrefix(w, "-")) {
			continue
		}
		return w
	}
	return ""
}

// Required reports whether the environment demands need (see RequireEnv).
func Required(need string) bool {
	return required(os.Getenv(RequireEnv), need)
}

func required(spec, need string) bool {
	var all, listed bool
	for _, w := range strings.Split(spec, ",") {
		switch w = strings.TrimSpace(w); w {
		case "all":
			all = true
		case need:
			listed = true
		case "-" + need:
			return false
		}
	}
	return all || listed
}

// Require skips t because this machine lacks need (err says what is missing and how to get
// it), or fails t where the environment demands need; nil err returns at once. Every test
// that cannot run its real parts goes through here, so no suite passes hollow in CI and
// `make test` lists what was skipped elsewhere.
func Require(t testing.TB, need string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if w := badRequireWord(os.Getenv(RequireEnv)); w != "" {
		t.Fatalf("%s=%s: %q names no need (known: all, %s; \"-<need>\" leaves one out of all); this test lacks %q: %v",
			RequireEnv, os.Getenv(RequireEnv), w, strings.Join(knownNeeds, ", "), need, err)
	}
	if Required(need) {
		t.Fatalf("%s=%s demands %q: %v", RequireEnv, os.Getenv(RequireEnv), need, err)
	}
	t.Skipf("needs %s: %v (set %s=%s to fail instead)", need, err, RequireEnv, need)
}
