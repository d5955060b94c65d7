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
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading RSS of %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmRSS %q: %w", rest, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}

// ReportRSS adds "<name>-rss-MB" for process pid.
func ReportRSS(b *testing.B, name string, pid int) {
	rss, err := RSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(rss)/(1<<20), name+"-rss-MB")
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
