package autoscaler_test

import (
	"flag"
	"os"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// env is the real management + tenant control plane pair shared by this package's tests;
// each test works in a namespace (a tenant) of its own.
var env *harness.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// `make unit`: the pure tests run, the ones needing control planes skip themselves.
		os.Exit(m.Run())
	}
	os.Exit(harness.Main(m, &env))
}
