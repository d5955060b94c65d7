package autoscaler_test

import (
	"context"
	"testing"
)

// declareTemplateCapacity gives this test binary's management apiserver the
// KubevirtMachineTemplate status.capacity field that CAPK's main branch has and the harness's
// CAPK v0.1.10 CRD lacks, so the simulated CAPK publishes the template capacity for scale from
// zero as a current CAPK would.
func declareTemplateCapacity(t testing.TB, ctx context.Context) {
	t.Helper()
	if err := env.Management.AddKubevirtMachineTemplateCapacity(ctx); err != nil {
		t.Fatal(err)
	}
}
