package ccm

import (
	"os"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }

// TestCCM starts the simulators, MetalLB and the ccm once and runs every scenario against
// them: a cluster has one MetalLB and one ccm per tenant, and starting them per test would
// dominate the run time. Scenarios that depend on nodes run after Nodes.
func TestCCM(t *testing.T) {
	s := startSuite(t, maxServices)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *suite)
	}{
		{"Nodes", testNodes},
		{"LoadBalancerLifecycle", testLoadBalancerLifecycle},
		{"InfraDriftRepaired", testDrift},
		{"PoolAndIPSelection", testPoolAndIPSelection},
		{"Refusals", testRefusals},
		{"MetricsAndEvents", testMetricsAndEvents},
		{"RefusedUpdateKeepsInfra", testRefusedUpdate},
		{"ForeignSharedIPKey", testForeignSharedIPKey},
		{"Quota", testQuota},
		{"LoadBalancerClass", testLoadBalancerClass},
		{"DualStack", testDualStack},
		{"ExternalTrafficPolicyLocal", testETPLocal},
		{"CraftedEndpointSlice", testCraftedEndpointSlice},
		{"CraftedProviderID", testCraftedProviderID},
		{"VMStoppedShutdownTaint", testShutdownTaint},
		{"VMDeletedNodeDeleted", testVMDeletedNodeDeleted},
		{"StatusLatencyAndAPICalls", testStatusLatency},
		{"OrphanGCAtStartup", testOrphanGC},
	} {
		if !t.Run(sc.name, func(t *testing.T) { sc.run(t, s) }) && sc.name == "Nodes" {
			t.Fatal("the remaining scenarios need the worker nodes")
		}
	}
}
