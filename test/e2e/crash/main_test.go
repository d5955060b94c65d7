package crash

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim"
)

var (
	env  *harness.Env
	sims *sim.Sim
)

// cluster is the tenant cluster every scenario serves (each component in a namespace of its
// own); the Cluster API simulator only acts for it.
const cluster = "alpha"

// phaseDelay is every simulated step: short, so the many runs fit the package's budget.
const phaseDelay = 20 * time.Millisecond

// TestMain runs the harness and the whole simulator (MetalLB included) once for the package.
func TestMain(m *testing.M) {
	// The three scenarios mostly wait for simulated phases, not for CPU: run them all at once
	// even on two cores (go test's -parallel defaults to GOMAXPROCS) unless -parallel is given.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		if err := flag.Set("test.parallel", "3"); err != nil {
			fmt.Fprintf(os.Stderr, "setting -test.parallel: %v\n", err)
		}
	}
	os.Exit(harness.MainWith(m, &env, func(e *harness.Env) (func() error, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s, err := sim.Start(ctx, e, sim.Options{PhaseDelay: phaseDelay, ClusterName: cluster, MetalLB: true})
		if err != nil {
			return nil, err
		}
		if err := fixture.EnsureClasses(ctx, e.Management.Client); err != nil {
			return nil, errors.Join(err, s.Stop())
		}
		sims = s
		return func() error {
			// After the tests: the figures of every scenario that ran.
			if len(table.rows) > 0 {
				fmt.Print(table.String())
			}
			return s.Stop()
		}, nil
	}))
}

// eventually polls cond (API reads of state the test cannot be notified about) until it holds
// or timeout passes, and returns the last error or condition failure.
func eventually(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		last = cond(ctx)
		return last == nil, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// row is one operation of the results table.
type row struct {
	component, op string
	writes        int // W: writes of an uninterrupted run = crash points
	tried         int // runs killed after write N
	converged     int // of those, runs that reached the desired end state
	leaked        int // orphaned infra objects over all runs
	audited       int // writes of the killed components in the apiservers' audit logs
	notes         []string
}

// results is the table printed at the end of the package's scenarios.
type results struct {
	mu   sync.Mutex
	rows []*row
}

var table results

func (r *results) add(x *row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, x)
}

func (r *results) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows := append([]*row(nil), r.rows...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].component < rows[j].component })
	var b strings.Builder
	fmt.Fprintf(&b, "\n| component | operation | writes (crash points) | killed runs | converged | leaked objects | audited writes |\n|---|---|---|---|---|---|---|\n")
	var points, tried, conv, leaked, audited int
	for _, x := range rows {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d |\n", x.component, x.op, x.writes, x.tried, x.converged, x.leaked, x.audited)
		points, tried, conv, leaked, audited = points+x.writes, tried+x.tried, conv+x.converged, leaked+x.leaked, audited+x.audited
	}
	fmt.Fprintf(&b, "| **total** | | %d | %d | %d | %d | %d |\n", points, tried, conv, leaked, audited)
	for _, x := range rows {
		for _, n := range x.notes {
			fmt.Fprintf(&b, "- %s %s: %s\n", x.component, x.op, n)
		}
	}
	return b.String()
}
