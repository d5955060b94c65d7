package main

import (
	"bytes"
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
	for _, want := range []string{"| test/e2e/csinode | StagePublish/ext4-2 | 20 | 65000000 ns/op · 18.20 stage-p50-ms", "**Failures:**", "--- FAIL: BenchmarkBroken"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
