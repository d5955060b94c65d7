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
