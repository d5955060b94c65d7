// Package deploy_test checks the Helm charts in deploy/charts against real apiservers: both
// charts render and lint with bin/helm (hack/bin-helm.sh), every rendered object is accepted by
// a server-side dry-run on the cluster it is meant for (management chart → management harness,
// tenant chart → tenant harness), the rendered config passes pkg/config validation, and the
// chart's Roles are what the components actually need (RBAC proof with a ServiceAccount
// identity bound to exactly the chart's Role).
package deploy_test

import (
	"os"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }
