package cdi

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

var env *harness.Env

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, &env))
}

// Delays used by most tests: long enough that every intermediate phase is observable, short
// enough that the package stays fast.
const (
	testPhaseDelay  = 150 * time.Millisecond
	testResizeDelay = 300 * time.Millisecond
)

// startSim runs a simulator with opts against the management cluster for the duration of the
// test. Tests run one at a time, so exactly one simulator acts on the cluster; each test
// works in its own namespace.
func startSim(t *testing.T, opts Options) {
	t.Helper()
	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := Setup(ctx, mgr, opts); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("simulator manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("simulator manager did not stop within 30s")
		}
	})
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		t.Fatal("simulator caches did not sync")
	}
}
