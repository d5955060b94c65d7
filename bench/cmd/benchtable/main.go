// Command benchtable turns `go test -bench` output (stdin) into the Markdown results table
// `make bench` writes to bench/results/latest.md. Every custom metric a benchmark reports
// (p50/p99 latencies, API calls, RSS) becomes a cell, so adding a scenario needs no change here.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

type row struct {
	pkg, name, iterations string
	metrics               []string
}

func parse(r io.Reader) (rows []row, failures []string, err error) {
	sc := bufio.NewScanner(r)
	pkg := ""
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(p, "github.com/tenantcloud/tenantcloud/")
			continue
		}
		if strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "FAIL") {
			failures = append(failures, line)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue // a benchmark's own log line, not a result
		}
		r := row{pkg: pkg, name: strings.TrimPrefix(f[0], "Benchmark"), iterations: f[1]}
		for i := 2; i+1 < len(f); i += 2 {
			r.metrics = append(r.metrics, f[i]+" "+f[i+1])
		}
		rows = append(rows, r)
	}
	return rows, failures, sc.Err()
}

func write(w io.Writer, rows []row, failures []string, now time.Time) {
	fmt.Fprintf(w, "# tenantcloud benchmark results\n\n%s · see bench/README.md for what each scenario measures.\n\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintln(w, "| package | scenario | runs | results |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.pkg, r.name, r.iterations, strings.Join(r.metrics, " · "))
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "| | no benchmark results | | |")
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
