// Command benchtable turns `go test -bench` output (stdin) into the Markdown results table
// `make bench` writes to bench/results/latest.md: every goal of every scenario bench/README.md
// promises (goals.go) beside its figure with ✓ or ✗, then every custom metric a benchmark
// reported (p50/p99 latencies, API calls, RSS) as a cell. A promised scenario without a result
// line says so (did not run, failed, not written yet) instead of vanishing from the table.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type row struct {
	pkg, name, iterations string
	metrics               []string
}

func parse(r io.Reader) (rows []row, failures []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20) // klog lines can be long
	pkg, pending := "", ""
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg, pending = strings.TrimPrefix(p, "github.com/tenantcloud/tenantcloud/"), ""
			continue
		}
		if strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "FAIL") {
			failures = append(failures, line)
			pending = ""
			continue
		}
		if strings.HasPrefix(line, "Benchmark") {
			f := strings.Fields(line)
			if r, ok := result(pkg, f[0], f[1:]); ok {
				rows = append(rows, r)
				pending = ""
			} else {
				// The name is printed before the run; when the code under test logs to the
				// same stream, the figures come on a later line of their own.
				pending = f[0]
			}
			continue
		}
		if pending != "" && strings.HasPrefix(line, " ") {
			if r, ok := result(pkg, pending, strings.Fields(line)); ok {
				rows = append(rows, r)
				pending = ""
			}
		}
	}
	return rows, failures, sc.Err()
}

// result reads "N X ns/op [value unit]..." into a row; ok is false for anything else (a log
// line, a FAIL).
func result(pkg, name string, f []string) (row, bool) {
	if len(f) < 3 || len(f)%2 != 1 || f[2] != "ns/op" || strings.Trim(f[0], "0123456789") != "" {
		return row{}, false
	}
	r := row{pkg: pkg, name: strings.TrimPrefix(name, "Benchmark"), iterations: f[0]}
	for i := 1; i+1 < len(f); i += 2 {
		r.metrics = append(r.metrics, f[i]+" "+f[i+1])
	}
	return r, true
}

// procs is the -GOMAXPROCS suffix go test adds to a benchmark's name.
var procs = regexp.MustCompile(`-[0-9]+$`)

// outcome is what became of one promised scenario: its result line, or why there is none.
type outcome struct {
	scenario
	rows   []row  // one per run (go test -count=N repeats a benchmark)
	status string // without rows: did not run, failed, or pending
}

// match pairs every promised scenario with its result line; rows no scenario promises are
// returned as extra so that they are shown too.
func match(rows []row, failures []string) (outs []outcome, extra []row) {
	failed, failedPkgs := map[string]bool{}, map[string]bool{}
	for _, l := range failures {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "---" && f[1] == "FAIL:":
			failed[procs.ReplaceAllString(strings.TrimPrefix(f[2], "Benchmark"), "")] = true
		case len(f) >= 2 && f[0] == "FAIL":
			failedPkgs[strings.TrimPrefix(f[1], "github.com/tenantcloud/tenantcloud/")] = true
		}
	}
	used := make([]bool, len(rows))
	for _, s := range scenarios {
		o := outcome{scenario: s, status: "did not run"}
		for i := range rows {
			if rows[i].pkg == s.pkg && procs.ReplaceAllString(rows[i].name, "") == s.name {
				o.rows, used[i] = append(o.rows, rows[i]), true
			}
		}
		if len(o.rows) == 0 {
			for name := range failed {
				if name == s.name || strings.HasPrefix(s.name, name+"/") {
					o.status = "failed (see Failures)"
				}
			}
			if failedPkgs[s.pkg] {
				o.status = "failed (see Failures)"
			}
			if s.pending != "" {
				o.status = "did not run: " + s.pending
			}
		}
		outs = append(outs, o)
	}
	for i, r := range rows {
		if !used[i] {
			extra = append(extra, r)
		}
	}
	return outs, extra
}

// check returns the figure a goal bounds in a scenario's runs (the largest matching metric of
// any run, named) and whether it meets the goal; without a figure it says why.
func check(g goal, runs []row) (figure string, ok bool) {
	if len(runs) == 0 {
		return "—", false
	}
	var metrics []string
	for _, r := range runs {
		metrics = append(metrics, r.metrics...)
	}
	found, worst, name := false, 0.0, ""
	for _, m := range metrics {
		value, unit, _ := strings.Cut(m, " ")
		if !g.metric.MatchString(unit) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Sprintf("unreadable %q", m), false
		}
		if !found || v > worst {
			found, worst, name = true, v, unit
		}
	}
	switch {
	case found:
		return fmt.Sprintf("%s %s", strconv.FormatFloat(worst, 'f', -1, 64), name), worst <= g.max
	case g.absentIsZero:
		return "0 (none reported)", true
	default:
		return "not reported", false
	}
}

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

func write(w io.Writer, rows []row, failures []string, now time.Time) {
	outs, extra := match(rows, failures)
	fmt.Fprintf(w, "# tenantcloud benchmark results\n\n%s · see bench/README.md for what each scenario measures.\n\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintln(w, "## Goals\n\n| scenario | goal | figure | |\n|---|---|---|---|")
	for _, o := range outs {
		if len(o.goals) == 0 {
			state := "ran (no goal)"
			if len(o.rows) == 0 {
				state = o.status
			}
			fmt.Fprintf(w, "| %s | — | %s | |\n", o.name, state)
		}
		for _, g := range o.goals {
			figure, ok := check(g, o.rows)
			if len(o.rows) == 0 {
				figure = o.status
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", o.name, g.text, figure, mark(ok))
		}
	}
	fmt.Fprintln(w, "\n## Figures\n\n| package | scenario | runs | results |\n|---|---|---|---|")
	for _, o := range outs {
		if len(o.rows) == 0 {
			fmt.Fprintf(w, "| %s | %s | — | %s |\n", o.pkg, o.name, o.status)
		}
		for _, r := range o.rows {
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.pkg, r.name, r.iterations, strings.Join(r.metrics, " · "))
		}
	}
	for _, r := range extra {
		fmt.Fprintf(w, "| %s | %s | %s | %s (not in bench/README.md) |\n", r.pkg, r.name, r.iterations, strings.Join(r.metrics, " · "))
	}
	if len(failures) > 0 {
		fmt.Fprintf(w, "\n**Failures:**\n\n```\n%s\n```\n", strings.Join(failures, "\n"))
	}
}

func main() {
	rows, failures, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	write(os.Stdout, rows, failures, time.Now())
	if len(failures) > 0 || len(rows) == 0 {
		os.Exit(1)
	}
}
