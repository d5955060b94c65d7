package harness

import (
	"os/exec"
	"strings"
	"testing"
)

// ForbidDeps fails t for every package the Go package in dir (e.g. ".", a program's directory
// from its own test) links that is one of forbidden or below one of them. It reads `go list
// -deps`, so it sees what the binary links, test files aside.
func ForbidDeps(t testing.TB, dir string, forbidden ...string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	Require(t, NeedTool, err)
	out, err := exec.Command(goTool, "list", "-deps", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", dir, err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps %s returned too little to be trusted:\n%s", dir, out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("%s links %s", dir, d)
			}
		}
	}
}
