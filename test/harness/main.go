package harness

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// Main starts the harness for a test binary, runs its tests and stops the harness, also on
// SIGINT/SIGTERM. Use it from TestMain:
//
//	var env *harness.Env
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }
func Main(m *testing.M, env **Env) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := Start(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		return 1
	}
	*env = e

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			_ = e.Stop()
			os.Exit(130)
		}
	}()
	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	if code != 0 {
		e.KeepDir = true
		fmt.Fprintf(os.Stderr, "harness: tests failed; control-plane logs kept in %s\n", e.Dir)
	}
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
