package main

import (
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestNoInfraDependencies guards the tenant boundary (DESIGN.md §2.6): csi-node runs inside
// the tenant and must not even link code that talks to the management cluster.
func TestNoInfraDependencies(t *testing.T) {
	harness.ForbidDeps(t, ".",
		"github.com/tenantcloud/tenantcloud/pkg/infra",
		"kubevirt.io/client-go",
		"kubevirt.io/api",
		"kubevirt.io/containerized-data-importer-api",
		"sigs.k8s.io/controller-runtime",
		"sigs.k8s.io/cluster-api",
	)
}
