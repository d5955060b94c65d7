package harness

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Main starts the harness for a test binary, runs its tests and stops the harness, also on
// SIGINT/SIGTERM. Use it from TestMain:
//
//	var env *harness.Env
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }
func Main(m *testing.M, env **Env) int { return MainWith(m, env, nil) }

// Setup starts what a test binary runs on top of the harness (simulators, say). The stop it
// returns (nil for nothing) runs after the tests, and on SIGINT/SIGTERM, before the control
// planes stop, so loop devices and processes are released while the apiservers still answer.
type Setup func(e *Env) (stop func() error, err error)

// MainWith is Main with setup run after the harness starts and before the tests.
func MainWith(m *testing.M, env **Env, setup Setup) int {
	return MainWithOptions(m, env, Options{}, setup)
}

// MainWithOptions is MainWith with the clusters started with opts.
func MainWithOptions(m *testing.M, env **Env, opts Options, setup Setup) int {
	klogToTestOutput()
	// Simulators and in-process components run controller-runtime, which logs through its
	// own logger: klog's, as the programs set it (pkg/cli).
	ctrllog.SetLogger(klog.NewKlogr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := StartWith(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		return 1
	}
	*env = e
	stop := func() error { return nil }
	if setup != nil {
		s, err := setup(e)
		if err != nil {
			fmt.Fprintf(os.Stderr, "harness setup: %v\n", err)
			_ = e.Stop()
			return 1
		}
		if s != nil {
			stop = s
		}
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			_ = stop()
			_ = e.Stop()
			os.Exit(130)
		}
	}()
	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	if err := stop(); err != nil {
		fmt.Fprintf(os.Stderr, "harness setup: stopping: %v\n", err)
		code = 1
	}
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

// klogToTestOutput fixes klog's output stream now, before any goroutine logs. Under go test
// -json (make test), testing.M.Run replaces os.Stderr with os.Stdout (go.dev/issue/33419);
// klog writing "to stderr" reads that variable on every line, so the simulators' and
// controllers' goroutines started by setup, before m.Run, raced with it (seen under -race in
// test/e2e/deploy: "race detected outside of test execution"). klog now writes to the stream
// testing would have chosen, held in its own variable.
func klogToTestOutput() {
	if !flag.Parsed() {
		flag.Parse() // testing.M.Run parses only if nobody did
	}
	out := io.Writer(os.Stderr)
	if v := flag.Lookup("test.v"); v != nil && v.Value.String() == "test2json" {
		out = os.Stdout
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{"logtostderr": "false", "one_output": "true", "stderrthreshold": "FATAL"} {
		if err := fs.Set(name, value); err != nil {
			panic(fmt.Sprintf("klog flag %s: %v", name, err))
		}
	}
	klog.SetOutput(out)
}
