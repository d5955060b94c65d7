package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestNoInfraDependencies guards the tenant boundary (DESIGN.md §2.6): csi-node runs inside
// the tenant and must not even link code that talks to the management cluster.
func TestNoInfraDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	harness.Require(t, harness.NeedTool, err)
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/tenantcloud/tenantcloud/pkg/infra",
		"kubevirt.io/client-go",
		"kubevirt.io/api",
		"kubevirt.io/containerized-data-importer-api",
		"sigs.k8s.io/controller-runtime",
		"sigs.k8s.io/cluster-api",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned too little to be trusted:\n%s", out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("csi-node depends on %s", d)
			}
		}
	}
}
