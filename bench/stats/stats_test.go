package stats

import (
	"os"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	var l Latencies
	if l.Quantile(0.5) != 0 {
		t.Fatal("empty recorder must report 0")
	}
	for i := 100; i >= 1; i-- { // out of order on purpose
		l.Add(time.Duration(i) * time.Millisecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := l.Quantile(tt.q); got != tt.want {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
}

func TestRSSOfSelf(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || rss > 64<<30 {
		t.Fatalf("implausible RSS %d", rss)
	}
	if _, err := RSS(-1); err == nil {
		t.Fatal("RSS of a missing process must fail")
	}
	// The parts add up to the whole (RssShmem aside, which a Go test binary does not have), so
	// reading them separately does not misattribute memory.
	m, err := readMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m["RssAnon"] <= 0 || m["RssFile"] <= 0 || m["RssAnon"]+m["RssFile"] > m["VmRSS"] || m["VmRSS"]-m["RssAnon"]-m["RssFile"] > 1<<20 {
		t.Fatalf("VmRSS %d, RssAnon %d, RssFile %d do not add up", m["VmRSS"], m["RssAnon"], m["RssFile"])
	}
	r := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
		}
		ReportRSS(b, "self", os.Getpid())
	})
	for _, unit := range []string{"self-rss-MB", "self-rss-anon-MB", "self-rss-file-MB"} {
		if r.Extra[unit] <= 0 {
			t.Errorf("%s = %v, want a positive figure (%v)", unit, r.Extra[unit], r.Extra)
		}
	}
}

func TestReportCalls(t *testing.T) {
	r := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
		}
		ReportCalls(b, "mgmt-", map[string]int{
			"create datavolumes": 10, "update virtualmachines/addvolume": 5, "get /version": 2, "get /healthz": 2,
		}, 5, "vol")
	})
	for name, want := range map[string]float64{
		"mgmt-create-datavolumes-calls/vol":               2,
		"mgmt-update-virtualmachines.addvolume-calls/vol": 1,
		"mgmt-other-calls/vol":                            0.8,
	} {
		if got := r.Extra[name]; got != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got, want, r.Extra)
		}
	}
}
