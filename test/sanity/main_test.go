// Package sanity runs csi-test's sanity suite against the FULL tenantcloud driver: the
// csi-controller on the harness management cluster with the simulated CDI/LINSTOR, KubeVirt,
// virt-api and hot-plug, and csi-node running "inside" a simulated VM (its by-id directory of
// real loop-device disks and its own kubelet directory), so that CreateVolume →
// ControllerPublishVolume → NodeStageVolume (mkfs, mount) → NodePublishVolume → expand →
// unpublish → delete all happen for real.
package sanity

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/e2e/csicontroller/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

var (
	env        *harness.Env
	sims       *fixture.Sims
	skipReason string
)

// phaseDelay is every simulator step: small enough for ~100 specs to run in a couple of
// minutes, large enough that every wait is a real wait on events.
const phaseDelay = 20 * time.Millisecond

// TestMain is harness.Main plus the simulators, which must stop (and release their loop
// devices) before the control planes go away.
func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if skipReason = fixture.Supported(); skipReason != "" {
		// Nothing here runs without root and loop devices; do not even start the harness.
		return m.Run()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := harness.Start(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		return 1
	}
	env = e
	diskRoot, err := os.MkdirTemp("", "sanity-disks-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = e.Stop()
		return 1
	}
	defer os.RemoveAll(diskRoot)
	sims, err = fixture.Start(env, fixture.Options{PhaseDelay: phaseDelay, DiskRoot: diskRoot})
	if err != nil {
		fmt.Fprintf(os.Stderr, "simulators: %v\n", err)
		_ = e.Stop()
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			_ = sims.Stop()
			_ = e.Stop()
			os.Exit(130)
		}
	}()
	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	if err := sims.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping simulators: %v\n", err)
		code = 1
	}
	if code != 0 {
		e.KeepDir = true
		fmt.Fprintf(os.Stderr, "harness: tests failed; control-plane logs kept in %s\n", e.Dir)
	}
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		code = 1
	}
	return code
}
