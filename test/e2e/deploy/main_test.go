// Package deploy_test checks the Helm charts in deploy/charts against real apiservers: both
// charts render and lint with bin/helm (hack/bin-helm.sh), every rendered object is accepted by
// a server-side dry-run on the cluster it is meant for (management chart → management harness,
// tenant chart → tenant harness), the rendered config passes pkg/config validation, and the
// chart's Roles are what the components actually need: each program runs with identities
// bound to exactly the chart's Roles and passes its scenarios, and removing any one permission
// makes a named scenario fail (the least-privilege tables).
package deploy_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim"
)

var (
	env *harness.Env
	si  *sim.Sim
)

// simCluster is the one tenant cluster the simulator's Cluster API serves; the RBAC proofs of
// the ccm and csi-controller use it (the autoscaler proof's cluster is left alone).
const simCluster = "rbac"

func TestMain(m *testing.M) {
	// Build the programs while the control planes start.
	go func() { _, _ = built() }()
	os.Exit(harness.MainWith(m, &env, func(e *harness.Env) (func() error, error) {
		s, err := sim.Start(context.Background(), e, sim.Options{
			ClusterName: simCluster, ExternalCloudProvider: true, MetalLB: true, PhaseDelay: 20 * time.Millisecond,
		})
		if err != nil {
			return nil, err
		}
		si = s
		return func() error {
			if dir, err := built(); err == nil {
				_ = os.RemoveAll(dir)
			}
			return s.Stop()
		}, nil
	}))
}
