// Package stats turns benchmark samples into the figures bench/README.md promises: latency
// quantiles (a mean hides the tail the goals are about) and process memory.
package stats

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Latencies collects durations from any number of goroutines.
type Latencies struct {
	mu      sync.Mutex
	samples []time.Duration
}

// Add records one sample.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.samples = append(l.samples, d)
	l.mu.Unlock()
}

// Since records the time elapsed since start.
func (l *Latencies) Since(start time.Time) { l.Add(time.Since(start)) }

// Len is the number of samples.
func (l *Latencies) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.samples)
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) by the nearest-rank method; 0 without samples.
func (l *Latencies) Quantile(q float64) time.Duration {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	l.mu.Unlock()
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	rank := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// Report adds "<name>-p50-ms" and "<name>-p99-ms" to the benchmark's result line.
func (l *Latencies) Report(b *testing.B, name string) {
	b.ReportMetric(ms(l.Quantile(0.50)), name+"-p50-ms")
	b.ReportMetric(ms(l.Quantile(0.99)), name+"-p99-ms")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// RSS returns the resident set size of process pid in bytes, from /proc.
func RSS(pid int) (int64, error) {
	m, err := readMemory(pid)
	return m["VmRSS"], err
}

// readMemory reads VmRSS and its parts RssAnon (heap, stacks, runtime: what the process
// allocated) and RssFile (the pages of its binary it touched, shared with every process running
// it but still counted) from /proc/<pid>/status, in bytes.
func readMemory(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("reading RSS of %d: %w", pid, err)
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "RssAnon" && key != "RssFile") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parsing %s %q: %w", key, rest, err)
		}
		m[key] = kb * 1024
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading RSS of %d: %w", pid, err)
	}
	for _, key := range []string{"VmRSS", "RssAnon", "RssFile"} {
		if _, ok := m[key]; !ok {
			return nil, fmt.Errorf("no %s for process %d", key, pid)
		}
	}
	return m, nil
}

// ReportRSS adds "<name>-rss-MB" for process pid, and its parts "<name>-rss-anon-MB" (what the
// process allocated: heap, stacks) and "<name>-rss-file-MB" (its binary's pages), which tell a
// cache that holds too much from a binary that links too much.
func ReportRSS(b *testing.B, name string, pid int) {
	m, err := readMemory(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(m["VmRSS"])/(1<<20), name+"-rss-MB")
	b.ReportMetric(float64(m["RssAnon"])/(1<<20), name+"-rss-anon-MB")
	b.ReportMetric(float64(m["RssFile"])/(1<<20), name+"-rss-file-MB")
}

// ReportCalls adds one "<prefix><verb>-<resource>-calls/<unit>" metric per audit-log key
// ("verb resource", as harness.CountByKey returns them), divided by per (e.g. the number of volumes
// with unit "vol", or the minutes observed with unit "min"); prefix tells clusters or
// components apart in one row. Keys that are not resource
// requests (no resource: a URI) are summed into "other-calls/<unit>" to keep the table narrow.
func ReportCalls(b *testing.B, prefix string, counts map[string]int, per float64, unit string) {
	other := 0
	for key, n := range counts {
		verb, resource, ok := strings.Cut(key, " ")
		if !ok || strings.HasPrefix(resource, "/") {
			other += n
			continue
		}
		b.ReportMetric(float64(n)/per, prefix+verb+"-"+strings.ReplaceAll(resource, "/", ".")+"-calls/"+unit)
	}
	if other > 0 {
		b.ReportMetric(float64(other)/per, prefix+"other-calls/"+unit)
	}
}
