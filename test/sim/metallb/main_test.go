package metallb

import (
	"os"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }
