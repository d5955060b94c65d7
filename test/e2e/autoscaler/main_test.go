// Package autoscaler_test runs the autoscaler-provider end to end: the real binary against the
// harness control planes, and the provider driving the Cluster API/KubeVirt simulator through
// scale-up and scale-down the way cluster-autoscaler calls it.
package autoscaler_test

import (
	"os"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }
