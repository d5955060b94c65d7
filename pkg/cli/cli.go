// Package cli is the plumbing the four tenantcloud mains share: flag parsing, --help,
// --version, loading the tenant config for one component, and exit codes. Keeping it here
// keeps the mains thin and lets tests drive a whole program through Program.Run.
package cli

import (
	"context"
	"errors"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/metrics"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

// Exit codes. Usage errors get their own code so scripts and init systems can tell a bad
// command line from a bad config or a runtime failure.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Options are the flags every program has.
type Options struct {
	ConfigPath         string
	MetricsBindAddress string
	// Profiling serves pprof on the metrics endpoint.
	Profiling bool
	// MetricsAddress is the address the metrics endpoint is bound to (set by Run, empty when
	// disabled): MetricsBindAddress may ask for port 0.
	MetricsAddress string
	// Metrics is this run's instrumentation (never nil in Serve); Run serves it on
	// MetricsBindAddress unless that is "0".
	Metrics *metrics.Metrics
}

// Program describes one tenantcloud binary.
type Program struct {
	// Component selects the config requirements and is also the program name.
	Component config.Component
	// Description is one sentence for --help saying what the program does.
	Description string
	// AddFlags registers the program's own flags; may be nil.
	AddFlags func(fs *pflag.FlagSet)
	// CheckFlags validates the program's own flags after parsing; may be nil. An error is a
	// usage error.
	CheckFlags func() error
	// Serve runs the program until ctx is cancelled (SIGINT/SIGTERM).
	Serve func(ctx context.Context, cfg *config.Config, opts Options) error
	// Gatherers are further metric registries the metrics endpoint serves besides
	// Options.Metrics (e.g. controller-runtime's); may be nil.
	Gatherers []prometheus.Gatherer
	// GCPercent is the garbage collector's target when GOGC is not set; 0 keeps the runtime's
	// 100. A program whose heap is mostly a cache that changes little can trade a little CPU
	// when busy for a smaller heap goal, which is most of its resident memory when idle.
	GCPercent int
}

// Run parses args, loads and validates the config and serves. It returns the process exit
// code; nothing it does calls os.Exit, so tests can call it directly.
func (p Program) Run(args []string, stdout, stderr io.Writer) int {
	defer klog.Flush()
	name := string(p.Component)

	var opts Options
	var help, showVersion, checkConfig bool
	own := pflag.NewFlagSet(name, pflag.ContinueOnError)
	own.StringVar(&opts.ConfigPath, "config", "", "path to the tenant config file (required)")
	own.BoolVar(&checkConfig, "check-config", false, "validate the config for this program, print a summary and exit")
	own.StringVar(&opts.MetricsBindAddress, "metrics-bind-address", ":8080", `address the metrics endpoint binds to; "0" disables it`)
	own.BoolVar(&opts.Profiling, "profiling", false, "serve pprof profiles under /debug/pprof/ on the metrics endpoint")
	if p.AddFlags != nil {
		p.AddFlags(own)
	}
	own.BoolVar(&showVersion, "version", false, "print the version and exit")
	own.BoolVarP(&help, "help", "h", false, "print this help and exit")

	// klog only registers on a Go FlagSet. Its flags are kept in their own set so --help can
	// list them apart from the program's flags.
	goFlags := goflag.NewFlagSet(name, goflag.ContinueOnError)
	klog.InitFlags(goFlags)
	logging := pflag.NewFlagSet(name, pflag.ContinueOnError)
	logging.AddGoFlagSet(goFlags)

	all := pflag.NewFlagSet(name, pflag.ContinueOnError)
	all.AddFlagSet(own)
	all.AddFlagSet(logging)
	// pflag would print the error and the whole usage on every mistake; we print once, below.
	all.SetOutput(io.Discard)

	if err := all.Parse(args); err != nil {
		return usageError(stderr, name, err)
	}
	if help {
		printUsage(stdout, p, own, logging)
		return ExitOK
	}
	if showVersion {
		fmt.Fprintln(stdout, version.String(name))
		return ExitOK
	}
	if all.NArg() > 0 {
		return usageError(stderr, name, fmt.Errorf("unexpected arguments: %q", all.Args()))
	}
	if opts.ConfigPath == "" {
		return usageError(stderr, name, errors.New("--config is required"))
	}
	if p.CheckFlags != nil {
		if err := p.CheckFlags(); err != nil {
			return usageError(stderr, name, err)
		}
	}

	cfg, err := loadFor(opts.ConfigPath, p.Component)
	if err != nil {
		return fail(stderr, err)
	}
	if checkConfig {
		fmt.Fprintf(stdout, "config OK: cluster=%s namespace=%s\n", cfg.ClusterName, cfg.InfraNamespace)
		return ExitOK
	}
	klog.InfoS("Loaded config", "program", name, "version", version.Version,
		"cluster", cfg.ClusterName, "namespace", cfg.InfraNamespace)
	if soft, err := applyMemoryLimit(cgroupRoot, os.Getenv); err != nil {
		klog.ErrorS(err, "Running without a Go memory limit")
	} else if soft > 0 {
		klog.InfoS("Go memory limit from the container's", "GOMEMLIMIT", soft)
	}
	if gc := applyGCPercent(p.GCPercent, os.Getenv); gc > 0 {
		klog.InfoS("Garbage collector target", "GOGC", gc)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts.Metrics = metrics.New(name)
	if opts.MetricsBindAddress != "0" && opts.MetricsBindAddress != "" {
		handler := opts.Metrics.Handler(metrics.HandlerOptions{Profiling: opts.Profiling, Gatherers: p.Gatherers})
		bound, served, err := metrics.Serve(ctx, opts.MetricsBindAddress, handler)
		if err != nil {
			return fail(stderr, fmt.Errorf("%s: %w", name, err))
		}
		opts.MetricsAddress = bound
		defer func() { <-served }() // the server stops with ctx
		go func() {
			if err := <-served; err != nil {
				klog.ErrorS(err, "Metrics endpoint stopped")
			}
		}()
	}
	err = p.Serve(ctx, cfg, opts)
	stop() // also when Serve returned on its own, so the metrics server stops
	if err != nil {
		return fail(stderr, fmt.Errorf("%s: %w", name, err))
	}
	return ExitOK
}

// loadFor loads path and checks it against what component c in particular needs.
func loadFor(path string, c config.Component) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err // already names the path
	}
	if err := cfg.ValidateFor(c); err != nil {
		return nil, fmt.Errorf("loading config %s: %w", path, err)
	}
	return cfg, nil
}

func printUsage(w io.Writer, p Program, own, logging *pflag.FlagSet) {
	name := string(p.Component)
	fmt.Fprintf(w, "%s - %s\n\nUsage:\n  %s --config PATH [flags]\n\nFlags:\n%s\nLogging flags:\n%s",
		name, p.Description, name, own.FlagUsages(), logging.FlagUsages())
}

func usageError(w io.Writer, program string, err error) int {
	fmt.Fprintf(w, "error: %v\nRun '%s --help' for usage.\n", err, program)
	return ExitUsage
}

func fail(w io.Writer, err error) int {
	fmt.Fprintf(w, "error: %v\n", err)
	return ExitError
}
