package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const sample = `goos: linux
pkg: github.com/tenantcloud/tenantcloud/test/e2e/csinode
BenchmarkStagePublish/ext4-2         	      20	  65000000 ns/op	        18.20 stage-p50-ms	        41.00 stage-p99-ms
    bench_test.go:12: a log line that is not a result
BenchmarkBroken-2 	FAIL
--- FAIL: BenchmarkBroken
ok  	github.com/tenantcloud/tenantcloud/test/e2e/csinode	3.1s
pkg: github.com/tenantcloud/tenantcloud/test/e2e/csicontroller
BenchmarkVolumeOverhead/concurrent=1-2         	I1122 19:41:53.484232    8064 server.go:225] "CSI controller ready" a b
I1122 19:41:54.000000    8064 server.go:1] "more log" x y
      20	 694406063 ns/op	         1.000 create-datavolumes-calls/vol
`

func TestParseAndWrite(t *testing.T) {
	rows, failures, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].pkg != "test/e2e/csinode" || rows[0].name != "StagePublish/ext4-2" || rows[0].iterations != "20" {
		t.Fatalf("rows = %+v", rows)
	}
	// Figures on their own line after the benchmark's log output.
	if r := rows[1]; r.pkg != "test/e2e/csicontroller" || r.name != "VolumeOverhead/concurrent=1-2" ||
		strings.Join(r.metrics, "|") != "694406063 ns/op|1.000 create-datavolumes-calls/vol" {
		t.Fatalf("interleaved row = %+v", r)
	}
	if got := strings.Join(rows[0].metrics, "|"); got != "65000000 ns/op|18.20 stage-p50-ms|41.00 stage-p99-ms" {
		t.Fatalf("metrics = %q", got)
	}
	if len(failures) != 1 {
		t.Fatalf("failures = %q", failures)
	}
	var out bytes.Buffer
	write(&out, rows, failures, time.Unix(0, 0))
	for _, want := range []string{
		"| test/e2e/csinode | StagePublish/ext4-2 | 20 | 65000000 ns/op · 18.20 stage-p50-ms",
		"| StagePublish/ext4 | — | ran (no goal) | |",
		// Ran, but without the metric its goal bounds.
		"| VolumeOverhead/concurrent=1 | CreateVolume overhead p99 ≤ 200 ms | not reported | ✗ |",
		// Promised, absent from the output: every goal says so.
		"| VolumeOverhead/concurrent=50 | CreateVolume overhead p99 ≤ 200 ms | did not run | ✗ |",
		"| test/e2e/outage | CCMFailover | — | did not run |",
		"| StagePublish/xfs | — | did not run | |",
		"| ScaleUp100 | autoscaler-provider's share ≤ 1 % | did not run | ✗ |",
		"**Failures:**", "--- FAIL: BenchmarkBroken",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestGoals(t *testing.T) {
	for _, tc := range []struct {
		name         string
		goal         goal
		metrics      []string
		figure       string
		ok           bool
		nilRow       bool
		wantNotFound bool
	}{
		{name: "under the bound", goal: atMost("", "(burst|one)-p99-ms", 300),
			metrics: []string{"120.5 burst-p99-ms", "80 one-p99-ms", "900 burst-e2e-p99-ms"}, figure: "120.5 burst-p99-ms", ok: true},
		{name: "the worst metric decides", goal: atMost("", "(burst|one)-p99-ms", 300),
			metrics: []string{"120.5 burst-p99-ms", "301 one-p99-ms"}, figure: "301 one-p99-ms"},
		{name: "equal to the bound meets it", goal: atMost("", "ccm-rss-MB", 40),
			metrics: []string{"40 ccm-rss-MB"}, figure: "40 ccm-rss-MB", ok: true},
		{name: "over the bound", goal: atMost("", "ccm-rss-MB", 40),
			metrics: []string{"78.2 ccm-rss-MB"}, figure: "78.2 ccm-rss-MB"},
		{name: "whole names only", goal: atMost("", "ccm-rss-MB", 40),
			metrics: []string{"1 other-ccm-rss-MB"}, figure: "not reported"},
		{name: "missing metric fails", goal: atMost("", "csi-node-rss-MB", 20), figure: "not reported"},
		{name: "absent call column is zero", goal: none("", "(idle-)?(mgmt|tenant)-list-.*"),
			metrics: []string{"1 mgmt-create-services-calls/svc"}, figure: "0 (none reported)", ok: true},
		{name: "a LIST fails no-LIST", goal: none("", "(idle-)?(mgmt|tenant)-list-.*"),
			metrics: []string{"0.01 idle-tenant-list-services-calls/min"}, figure: "0.01 idle-tenant-list-services-calls/min"},
		{name: "zero requests", goal: atMost("", "idle-(mgmt|tenant)-calls/min", 0),
			metrics: []string{"0 idle-mgmt-calls/min", "0 idle-tenant-calls/min"}, figure: "0 idle-mgmt-calls/min", ok: true},
		{name: "unreadable value", goal: atMost("", "x", 1), metrics: []string{"abc x"}, figure: `unreadable "abc x"`},
		{name: "no row", goal: atMost("", "x", 1), nilRow: true, figure: "—"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := []row{{metrics: tc.metrics}}
			if tc.nilRow {
				runs = nil
			}
			figure, ok := check(tc.goal, runs)
			if figure != tc.figure || ok != tc.ok {
				t.Errorf("check = %q, %v; want %q, %v", figure, ok, tc.figure, tc.ok)
			}
		})
	}
}

// TestRepeatedRuns: with go test -count=N every run is shown and the worst decides a goal.
func TestRepeatedRuns(t *testing.T) {
	runs := []row{{metrics: []string{"18 csi-node-rss-MB"}}, {metrics: []string{"22.5 csi-node-rss-MB"}}, {metrics: []string{"19 csi-node-rss-MB"}}}
	if figure, ok := check(atMost("", "csi-node-rss-MB", 20), runs); figure != "22.5 csi-node-rss-MB" || ok {
		t.Errorf("check = %q, %v; want the worst run, ✗", figure, ok)
	}
}

func TestMatch(t *testing.T) {
	rows := []row{
		{pkg: "test/e2e/ccm", name: "LBPropagation/services=100-2", iterations: "20"},
		{pkg: "test/e2e/ccm", name: "LBPropagation/services=100-2", iterations: "20"}, // -count=2
		{pkg: "test/e2e/ccm", name: "Unpromised-2", iterations: "1"},
		// Same name in another package is not the promised scenario.
		{pkg: "pkg/other", name: "IdleRSS-2", iterations: "1"},
	}
	failures := []string{
		"--- FAIL: BenchmarkLBPropagation/services=1000-2",
		"--- FAIL: BenchmarkLBPropagation",
		"FAIL\tgithub.com/tenantcloud/tenantcloud/test/e2e/outage\t600.1s",
	}
	outs, extra := match(rows, failures)
	status := map[string]string{}
	for _, o := range outs {
		if len(o.rows) > 0 {
			status[o.name] = fmt.Sprintf("ran %s ×%d", o.rows[0].name, len(o.rows))
		} else {
			status[o.name] = o.status
		}
	}
	for name, want := range map[string]string{
		"LBPropagation/services=100":  "ran LBPropagation/services=100-2 ×2",
		"LBPropagation/services=1000": "failed (see Failures)",
		"CCMFailover":                 "failed (see Failures)", // its package failed
		"IdleRSS":                     "did not run",
	} {
		if status[name] != want {
			t.Errorf("%s: %q, want %q", name, status[name], want)
		}
	}
	if len(outs) != len(scenarios) {
		t.Errorf("%d outcomes for %d scenarios", len(outs), len(scenarios))
	}
	if len(extra) != 2 || extra[0].name != "Unpromised-2" || extra[1].name != "IdleRSS-2" {
		t.Errorf("extra = %+v", extra)
	}
}

// TestScenariosMatchREADME: goals.go lists exactly the scenarios bench/README.md's table
// promises, in the packages it names, and every Benchmark function in the repository is one of
// them, so no scenario runs unlisted and none is listed that cannot appear.
func TestScenariosMatchREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| ([^ |]+) \\|")
	var promised []string
	for _, m := range line.FindAllStringSubmatch(string(readme), -1) {
		for _, name := range expand(m[1]) {
			promised = append(promised, m[2]+" "+name)
		}
	}
	var listed []string
	for _, s := range scenarios {
		listed = append(listed, s.pkg+" "+s.name)
	}
	if !slices.Equal(promised, listed) {
		t.Errorf("bench/README.md promises\n%s\ngoals.go lists\n%s", strings.Join(promised, "\n"), strings.Join(listed, "\n"))
	}

	fn := regexp.MustCompile(`(?m)^func Benchmark(\w+)\(`)
	root := "../../.."
	written := map[string]bool{} // scenario pkg+name → a Benchmark function runs it
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bin" || d.Name() == "hack" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pkg, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range fn.FindAllStringSubmatch(string(src), -1) {
			found := false
			for _, s := range scenarios {
				if s.pkg == pkg && (s.name == m[1] || strings.HasPrefix(s.name, m[1]+"/")) {
					found, written[s.pkg+" "+s.name] = true, true
				}
			}
			if !found {
				t.Errorf("Benchmark%s in %s is not in bench/README.md's scenarios", m[1], pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The other way round: a promised scenario has a benchmark (or the table would show it as
	// "did not run" for good), unless it is pending, and a pending one has none (or the table
	// would keep saying "not written yet" of a benchmark that runs).
	for _, s := range scenarios {
		switch {
		case s.pending == "" && !written[s.pkg+" "+s.name]:
			t.Errorf("scenario %s in %s has no Benchmark function; write it or give it a pending reason", s.name, s.pkg)
		case s.pending != "" && written[s.pkg+" "+s.name]:
			t.Errorf("scenario %s in %s is pending (%q) but has a Benchmark function", s.name, s.pkg, s.pending)
		}
	}
}

// expand spells out one {a,b} alternative in a README scenario name.
func expand(name string) []string {
	open, close := strings.Index(name, "{"), strings.Index(name, "}")
	if open < 0 || close < open {
		return []string{name}
	}
	var out []string
	for _, alt := range strings.Split(name[open+1:close], ",") {
		out = append(out, name[:open]+alt+name[close+1:])
	}
	return out
}
